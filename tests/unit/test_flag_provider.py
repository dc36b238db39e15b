"""Fault flags: the flagd provider reads the flags file and follows its changes; the local ConfigMap volumes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from functions.shared import flags, problems
from local.flags import FLAGS_CONFIG_MAP, ConfigMapVolumes
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
CONFIG_MAP = yaml.safe_load((ROOT / "knative" / "config" / "shop-flags.yaml").read_text())


def shipped_flags() -> dict[str, dict[str, object]]:
    return dict(json.loads(CONFIG_MAP["data"]["flags.json"])["flags"])


def test_the_config_map_declares_every_flag_once_and_all_off() -> None:
    declared = shipped_flags()
    assert sorted(declared) == sorted(flags.FLAGS)
    for key, flag in declared.items():
        assert flag["state"] == "ENABLED", key
        assert flag["defaultVariant"] == "off", key
        assert flag["variants"]["off"] in (0, False), key  # type: ignore[index]


def test_no_flags_file_means_every_flag_off(function_env: Callable[..., None]) -> None:
    function_env(FLAGD_OFFLINE_FLAG_SOURCE_PATH="")
    assert flags.number(flags.INVENTORY_RESERVE_FAILURE) == 0.0
    assert flags.enabled(flags.SMTP_REFUSING) is False
    flags.fail_sometimes(flags.INVENTORY_RESERVE_FAILURE)  # does nothing


def test_flags_follow_the_file_without_a_restart(tmp_path: Path, function_env: Callable[..., None]) -> None:
    volumes = ConfigMapVolumes(tmp_path / "configmaps")
    volumes.write()
    function_env(FLAGD_OFFLINE_FLAG_SOURCE_PATH=str(volumes.flags_file))
    assert flags.enabled(flags.NOTIFICATION_SEND_FAILURE) is False
    assert flags.number(flags.INVENTORY_RESERVE_LATENCY) == 0.0

    volumes.set_variant(flags.NOTIFICATION_SEND_FAILURE, "on")
    volumes.set_variant(flags.INVENTORY_RESERVE_FAILURE, "100%")
    volumes.set_variant(flags.INVENTORY_RESERVE_LATENCY, "300ms")
    eventually(lambda: flags.enabled(flags.NOTIFICATION_SEND_FAILURE), timeout=10)
    assert flags.number(flags.INVENTORY_RESERVE_LATENCY) == 300.0
    with pytest.raises(problems.Problem) as raised:
        flags.fail_sometimes(flags.INVENTORY_RESERVE_FAILURE)
    assert raised.value.status == 500
    assert "inventoryReserveFailure" in raised.value.detail
    refusal = problems.unprocessable("refused", "injected-fault")
    with pytest.raises(problems.Problem):
        flags.refuse_if(flags.NOTIFICATION_SEND_FAILURE, refusal)

    volumes.reset()
    eventually(lambda: not flags.enabled(flags.NOTIFICATION_SEND_FAILURE), timeout=10)
    assert flags.number(flags.INVENTORY_RESERVE_FAILURE) == 0.0
    flags.refuse_if(flags.NOTIFICATION_SEND_FAILURE, refusal)  # off: nothing raised


def test_a_mounted_config_map_moves_the_variables_that_point_into_it(tmp_path: Path) -> None:
    volumes = ConfigMapVolumes(tmp_path)
    env = {"FLAGD_OFFLINE_FLAG_SOURCE_PATH": "/etc/shop/flags/flags.json", "OTHER": "/etc/shop/flagsmith"}
    moved = volumes.env(env, ((FLAGS_CONFIG_MAP, "/etc/shop/flags"),))
    assert moved["FLAGD_OFFLINE_FLAG_SOURCE_PATH"] == str(tmp_path / FLAGS_CONFIG_MAP / "flags.json")
    assert moved["OTHER"] == "/etc/shop/flagsmith"  # only paths inside the mount
    with pytest.raises(KeyError, match="no ConfigMap 'missing'"):
        volumes.env(env, (("missing", "/etc/missing"),))
