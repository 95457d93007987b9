"""The hit-rate lab behind ``edgecache bench``: traces, policies, Belady's OPT, a simulator and reports.

Pure Python and offline (``bench load`` aside, which lives in :mod:`edgecache.lab.load`). The optional
``lab`` extra adds rich (progress bars and tables) and matplotlib (``--plot``); without it the lab falls
back to plain text and ``--plot`` says which package is missing.
"""
