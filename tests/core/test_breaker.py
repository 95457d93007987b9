from edgecache.core.breaker import BreakerState, CircuitBreaker


def test_stays_closed_below_the_threshold():
    breaker = CircuitBreaker(failure_threshold=3)
    breaker.failed(0.0)
    breaker.failed(0.0)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow(0.0)


def test_success_resets_the_failure_count():
    breaker = CircuitBreaker(failure_threshold=2)
    breaker.failed(0.0)
    breaker.succeeded()
    breaker.failed(0.0)
    assert breaker.state is BreakerState.CLOSED


def test_opens_at_the_threshold_and_refuses_until_reset_after():
    breaker = CircuitBreaker(failure_threshold=2, reset_after=5)
    breaker.failed(10.0)
    breaker.failed(10.0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(14.9)
    assert breaker.opened_count == 1


def test_half_open_lets_exactly_one_probe_through():
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5)
    breaker.failed(0.0)
    assert breaker.allow(5.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(5.0)
    assert not breaker.allow(6.0)


def test_successful_probe_closes():
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5)
    breaker.failed(0.0)
    assert breaker.allow(5.0)
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow(5.0)
    assert breaker.allow(5.0)


def test_failed_probe_reopens_for_another_period():
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5)
    breaker.failed(0.0)
    assert breaker.allow(5.0)
    breaker.failed(5.0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(9.9)
    assert breaker.allow(10.0)
    assert breaker.opened_count == 2


def test_available_answers_like_allow_without_claiming_the_probe():
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5)
    assert breaker.available(0.0)
    breaker.failed(10.0)
    assert not breaker.available(14.9)
    assert breaker.available(15.0)
    assert breaker.state is BreakerState.OPEN  # asking changed nothing
    assert breaker.allow(15.0)  # the probe is claimed...
    assert not breaker.available(15.0)  # ...so nobody else is let through
    assert not breaker.allow(15.0)


def test_an_abandoned_probe_lets_the_next_call_probe():
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5)
    breaker.failed(10.0)
    assert breaker.allow(15.0)
    breaker.abandoned()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.available(15.0) and breaker.allow(15.0)
