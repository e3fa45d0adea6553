"""The command line's persistent compilation cache (in subprocesses: it must not touch this
test process's JAX configuration) and its progress bar."""

import io
import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import scipy.optimize

from jaxinfer.cli import ProgressBar
from jaxinfer.optimize.curve_fit import curve_fit


def run_python(code):
    """Run ``code`` in a fresh interpreter; its last stdout line is JSON."""
    env = dict(os.environ)
    env.pop("JAXINFER_NO_COMPILATION_CACHE", None)   # the scripts set it themselves
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


COMPILE_TWICE = """
    import json
    import jax, jax.numpy as jnp
    import jaxinfer.compilation_cache as cc
    hits = []
    jax.monitoring.register_event_listener(
        lambda name, **kw: hits.append(name) if name.endswith("/cache_hits") else None)
    cc.enable({path!r})
    value = jax.jit(lambda x: jnp.sum(jnp.sin(x) ** 2))(jnp.arange(5.0))
    print(json.dumps({{"hits": len(hits), "entries": cc.entry_count({path!r}),
                      "value": float(value)}}))
"""


def test_a_second_process_reads_the_compiled_programs_back(tmp_path):
    path = str(tmp_path / "cache")
    first = run_python(COMPILE_TWICE.format(path=path))
    second = run_python(COMPILE_TWICE.format(path=path))
    assert first["hits"] == 0 and first["entries"] >= 1
    assert second["hits"] >= 1                       # served from the files of the first run
    assert second["entries"] == first["entries"]     # and nothing new had to be written
    expected = float(np.sum(np.sin(np.arange(5.0)) ** 2))
    assert abs(first["value"] - expected) < 1e-5 and second["value"] == first["value"]


CLI_SETTINGS = """
    import json, os
    import jax
    from jaxinfer import cli, compilation_cache
    seen = {{}}
    parser = cli.build_parser()
    cli._setup_compilation_cache(parser.parse_args(["--compilation-cache", {path!r}, "demo"]))
    seen["on"] = jax.config.jax_compilation_cache_dir
    seen["min_time"] = jax.config.jax_persistent_cache_min_compile_time_secs
    compilation_cache.disable()
    cli._setup_compilation_cache(parser.parse_args(["--no-compilation-cache", "demo"]))
    seen["flag_off"] = jax.config.jax_compilation_cache_dir
    os.environ["JAXINFER_NO_COMPILATION_CACHE"] = "1"
    cli._setup_compilation_cache(parser.parse_args(["demo"]))
    seen["env_off"] = jax.config.jax_compilation_cache_dir
    print(json.dumps(seen))
"""


def test_the_cli_turns_the_cache_on_unless_told_not_to(tmp_path):
    path = str(tmp_path / "cli-cache")
    seen = run_python(CLI_SETTINGS.format(path=path))
    assert seen["on"] == path and os.path.isdir(path) and seen["min_time"] == 0.0
    assert seen["flag_off"] is None and seen["env_off"] is None


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def decay(x, a, b):
    return a * jnp.exp(-b * x)


def test_progress_bar_follows_a_fit_and_counts_its_iterations():
    x = np.linspace(0.0, 2.0, 15)
    y = 3.0 * np.exp(-0.7 * x) + 0.01 * np.cos(9 * x)
    terminal = FakeTerminal()
    bar = ProgressBar(total=2, title="fits", stream=terminal, min_interval=0.0)
    bar.start("first")
    popt, _, info, _, _ = curve_fit(decay, x, y, p0=[1.0, 1.0], full_output=True, callback=bar)
    res = info["result"]
    ref, _ = scipy.optimize.curve_fit(lambda t, a, b: a * np.exp(-b * t), x, y, p0=[1.0, 1.0])
    np.testing.assert_allclose(popt, ref, rtol=1e-6)
    assert bar.calls >= int(res.nit) and bar.nit == int(res.nit)
    np.testing.assert_allclose(bar.fun, res.fun, rtol=1e-12)
    bar.start("second")
    bar.close()
    text = terminal.getvalue()
    assert "\r" in text and text.endswith("\n")
    assert f"iteration {int(res.nit)}" in text and "[" + "#" * 20 + "] 2/2" in text

    log = io.StringIO()   # not a terminal: one line per item, no redraws
    quiet = ProgressBar(total=3, stream=log)
    quiet.start("a")
    quiet.start("b", items=2)
    quiet.close()
    assert log.getvalue().splitlines() == ["  .. [1/3] a", "  .. [3/3] b"]
