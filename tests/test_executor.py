"""The executor interface: every kind gives the same results in item order, ships `shared` once per map call to
each worker, keeps an exception's type; bad input is a one-line typed error. Ray runs on a real local instance
(2 CPUs, started once for this module)."""

from __future__ import annotations

import os
import socket
import time

import pytest

from edgeprune.errors import ConfigError, DeviceError, MissingDependencyError
from edgeprune.executor import EXECUTORS, get_executor

ITEMS = list(range(6))


def square_plus(shared: dict, x: int) -> int:
    time.sleep(0.02 * (len(ITEMS) - x))  # early items finish last: the order must come from the executor
    return shared["k"] * x * x + shared["offset"]


def where(shared: dict, x: int) -> tuple[int, int, int]:
    """(worker pid, id of the shared object in that worker, torch threads there)."""
    import torch

    time.sleep(0.05)
    return os.getpid(), id(shared), torch.get_num_threads()


def fail_on_two(shared: None, x: int) -> int:
    if x == 2:
        raise MissingDependencyError("some_runtime", "tflite")  # its constructor does not take the message
    if x == 4:
        raise ValueError("four")
    return x


@pytest.fixture(scope="module")
def ray_executor():
    ex = get_executor("ray", workers=2)
    yield ex
    ex.close()
    import ray

    assert not ray.is_initialized()


@pytest.fixture(params=[*EXECUTORS, "thread"])
def executor(request, ray_executor):
    if request.param == "ray":
        yield ray_executor
        return
    ex = get_executor(request.param, workers=None if request.param == "serial" else 2)
    yield ex
    ex.close()


def test_results_in_item_order_with_shared_once_per_call(executor):
    shared = {"k": 3, "offset": 1}
    assert executor.map(square_plus, ITEMS, shared) == [3 * x * x + 1 for x in ITEMS]
    assert executor.map(square_plus, [], shared) == []
    # the executor is reused: a second call with other shared data sees the new data
    assert executor.map(square_plus, ITEMS, {"k": 1, "offset": 0}) == [x * x for x in ITEMS]
    first = executor.map(where, ITEMS, {"model": list(range(1000))})
    # one copy of `shared` per worker and map call: every item a worker ran saw the same object
    copies: dict[int, set[int]] = {}
    for pid, obj, _ in first:
        copies.setdefault(pid, set()).add(obj)
    assert all(len(ids) == 1 for ids in copies.values())
    if executor.kind in ("process", "ray"):
        assert os.getpid() not in copies and len(copies) <= 2
        assert {threads for _, _, threads in first} == {1}  # torch on one thread in each worker
        # equal data in a later call is not shipped again: a worker still holds the object it loaded
        again = executor.map(where, ITEMS, {"model": list(range(1000))})
        for pid, obj, _ in again:
            if pid in copies:
                assert copies[pid] == {obj}


def test_an_exception_keeps_its_type_and_message(executor):
    with pytest.raises(MissingDependencyError) as info:
        executor.map(fail_on_two, ITEMS, None)  # items 2 and 4 fail: the first in item order is raised
    assert str(info.value) == str(MissingDependencyError("some_runtime", "tflite"))
    assert info.value.exit_code == 4
    with pytest.raises(ValueError) as info:
        executor.map(fail_on_two, [4, 5], None)
    assert str(info.value) == "four"
    assert executor.map(fail_on_two, [0, 1], None) == [0, 1]  # still usable after a failure


def test_ray_uses_the_instance_it_started(ray_executor):
    import ray

    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2
    assert ray_executor.workers == 2 and ray_executor.kind == "ray"


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"kind": "dask"}, ConfigError, "--executor 'dask' is unknown; choose one of: serial, process, ray"),
        ({"kind": "process", "workers": 0}, ConfigError, "--workers 0 must be a whole number >= 1"),
        ({"kind": "process", "workers": -2}, ConfigError, "--workers -2 must be"),
        ({"kind": "process", "workers": True}, ConfigError, "--workers True must be"),
        ({"kind": "process", "workers": 1.5}, ConfigError, "--workers 1.5 must be"),
        ({"kind": "serial", "workers": 4}, ConfigError, "--workers 4 with --executor serial"),
        ({"kind": "process", "address": "10.0.0.1:6379"}, ConfigError,
         "--ray-address '10.0.0.1:6379' needs --executor ray (got --executor process)"),
        ({"kind": "ray", "address": "nohostport"}, ConfigError, "--ray-address 'nohostport' is not HOST:PORT"),
        ({"kind": "ray", "address": " "}, ConfigError, "--ray-address ' ' is empty"),
    ],
)
def test_bad_input_is_a_one_line_config_error(kwargs, error, text):
    with pytest.raises(error) as info:
        get_executor(**kwargs)
    assert text in str(info.value) and "\n" not in str(info.value)


def test_unreachable_ray_address_is_a_device_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DeviceError, match=rf"no Ray cluster answers at --ray-address '127.0.0.1:{port}'") as info:
        get_executor("ray", address=f"127.0.0.1:{port}")
    assert "ray start --head" in str(info.value) and "\n" not in str(info.value)
    assert time.monotonic() - started < 10


def test_a_function_processes_cannot_receive_is_a_config_error():
    with get_executor("process", workers=1) as ex:
        with pytest.raises(ConfigError, match="cannot travel to process workers"):
            ex.map(lambda shared, x: x, [1], None)
        with pytest.raises(ConfigError, match="shared data of a process map cannot be pickled"):
            ex.map(square_plus, [1], {"k": lambda: 1})


@pytest.mark.slow
def test_a_planned_search_on_ray_gives_the_serial_plan(ray_executor, digits_model, tmp_path):
    """The digits example planned for a size budget (predictions only, no fine-tunes, no accuracy budget, one scheme
    and thread count: small) with its sensitivity analysis on the module's local Ray instance: the same plan,
    sensitivity table and plan.yaml as with the serial executor."""
    from edgeprune.api import PlanSettings, plan

    def planned(executor: str) -> dict:
        settings = PlanSettings(schemes=("int8",), importances=("l2",), threads=1, finetune_epochs=0, rank_epochs=0,
                                top_k=2, sensitivity_samples=128, executor=executor)
        result = plan("examples:digits", devices=["pixel-8"], targets=["executorch"], size_mb=0.12,
                      max_accuracy_drop_pts=100, out=tmp_path / executor, plan=settings)
        (device,) = result.summary["devices"]
        return device["planning"]

    on_ray, serial = planned("ray"), planned("serial")
    assert on_ray["chosen"] == serial["chosen"]
    assert any(k < 1.0 for k in on_ray["chosen"]["keep"].values())  # the budget made it prune
    for table in (on_ray["sensitivity"]["l2"], serial["sensitivity"]["l2"]):
        table.pop("seconds")
    assert on_ray["sensitivity"] == serial["sensitivity"]
    assert (tmp_path / "ray" / "pixel-8" / "plan.yaml").read_text() == \
        (tmp_path / "serial" / "pixel-8" / "plan.yaml").read_text()
