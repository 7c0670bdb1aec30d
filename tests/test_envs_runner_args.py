"""The runner refuses unsafe or ambiguous requests before touching Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from rebuild.envs.runner import Limits, collect_outputs, run_build
from rebuild.errors import UsageError


def _call(tmp_path: Path, **kw: object) -> None:
    args: dict[str, object] = {
        "out_dir": tmp_path / "out",
        "log_path": tmp_path / "log",
        "source_date_epoch": 0,
    }
    args.update(kw)
    command = args.pop("command", ["true"])
    run_build("python-3.11", command, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["SOURCE_DATE_EPOCH", "PATH", "HOME", "TZ", "LC_ALL"])
def test_caller_cannot_override_the_normalized_environment(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="fixed by the build runner"):
        _call(tmp_path, env={name: "x"})


@pytest.mark.parametrize("target", ["/", "/etc", "/out", "/build", "/tmp", "/proc", "wheels"])
def test_input_mount_over_a_system_or_build_path_is_refused(tmp_path: Path, target: str) -> None:
    with pytest.raises(UsageError, match="cannot mount"):
        _call(tmp_path, mounts={target: tmp_path})


def test_non_empty_output_directory_is_refused(tmp_path: Path) -> None:
    # Stale files from an earlier build must never pass as this build's outputs.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.whl").write_bytes(b"stale")
    with pytest.raises(UsageError, match="not empty"):
        _call(tmp_path)


def test_empty_command_and_nul_in_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="1 to"):
        _call(tmp_path, command=[])
    with pytest.raises(UsageError, match="bad build command"):
        _call(tmp_path, command=["sh", "-c", "a\x00b"])


def test_limits_without_a_timeout_are_refused() -> None:
    with pytest.raises(UsageError, match="timeout"):
        Limits(timeout_s=0)


def test_output_symlink_is_reported_and_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("do not hash me")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "a.whl").write_bytes(b"wheel")
    (out / "link.whl").symlink_to(secret)
    outputs, problems = collect_outputs(out, Limits())
    assert [(o.path, o.size) for o in outputs] == [("sub/a.whl", 5)]
    assert problems == ["output link.whl is not a regular file"]


def test_too_many_output_files_is_a_problem(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for i in range(5):
        (out / f"f{i}").write_bytes(b"x")
    outputs, problems = collect_outputs(out, Limits(max_output_files=3))
    assert len(outputs) == 3 and problems == ["more than 3 output files"]


def test_no_engine_at_docker_host_is_a_clear_tool_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real client pointed at a socket nothing listens on (no engine double)."""
    from rebuild.envs import _docker
    from rebuild.errors import ToolError

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setattr(_docker, "_client", None)
    with pytest.raises(ToolError, match=r"no Docker engine answers at unix://.*run scripts/setup"):
        _call(tmp_path)


def test_public_surface_of_rebuild_envs_is_pinned() -> None:
    """Other parts (the verify engine) build on these names; changing them is a break."""
    import rebuild.envs

    assert sorted(rebuild.envs.__all__) == [
        "BUILD_DIR",
        "DEFAULT_LIMITS",
        "Definition",
        "DriftError",
        "Limits",
        "Lock",
        "OUT_DIR",
        "OutputFile",
        "RunResult",
        "SRC_DIR",
        "load_definition",
        "load_lock",
        "run_build",
        "verified_image",
    ]
    for name in rebuild.envs.__all__:
        assert hasattr(rebuild.envs, name)


def test_the_container_spec_is_hermetic_before_any_engine_is_asked(tmp_path: Path) -> None:
    """The spec alone (no engine): no network, no capabilities, read-only root, limits."""
    from rebuild.envs.runner import OUT_DIR, SRC_DIR, build_spec, container_options

    (tmp_path / "src").mkdir()
    (tmp_path / "wheels").mkdir()
    spec = build_spec(
        "python-3.11",
        ["make"],
        out_dir=tmp_path / "out",
        source_date_epoch=1_700_000_000,
        source_dir=tmp_path / "src",
        mounts={"/wheels": tmp_path / "wheels"},
        env={"PIP_NO_INDEX": "1"},
        limits=Limits(memory_bytes=256 * 1024 * 1024, pids=64),
    )
    opts = container_options(spec, "rebuild-build-x")
    assert opts["network_mode"] == "none"
    assert opts["cap_drop"] == ["ALL"]
    assert opts["security_opt"] == ["no-new-privileges"]
    assert opts["read_only"] is True
    assert opts["mem_limit"] == opts["memswap_limit"] == 256 * 1024 * 1024
    assert opts["pids_limit"] == 64
    assert opts["user"] == "1000:1000"
    assert opts["command"][-1] == "make"
    assert opts["environment"]["SOURCE_DATE_EPOCH"] == "1700000000"
    assert opts["environment"]["PIP_NO_INDEX"] == "1"
    binds = {v["bind"]: v["mode"] for v in opts["volumes"].values()}
    assert binds == {SRC_DIR: "ro", "/wheels": "ro", OUT_DIR: "rw"}
    assert not (tmp_path / "out").exists()  # deciding the spec creates nothing
