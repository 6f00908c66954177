"""The parallel run's plan holds: tests that share expensive fixtures run in one pytest-xdist worker.

tests/conftest.py marks each test with an ``xdist_group`` (its module, or ``fitted_run``); with ``--dist
loadgroup`` pytest-xdist appends the group to the test's id and sends a group to one worker. Where that breaks
(pytest 9.2 with xdist 3.8 ignored the groups), every test is scheduled alone and each worker rebuilds the
module- and session-scoped fixtures: the suite still passes, only slower, so this test says it.
"""

import pytest


def test_a_test_s_id_carries_its_group_in_a_parallel_run(request):
    if not hasattr(request.config, "workerinput"):
        pytest.skip("not a pytest-xdist worker (-n 0): no groups to check")
    assert request.node.nodeid.endswith("@test_parallel_plan"), request.node.nodeid
