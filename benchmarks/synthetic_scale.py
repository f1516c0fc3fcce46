"""Time and peak memory of the synthetic generator (and a scenario build) per preset.

Each preset runs in a fresh process so its peak RSS is its own. Prints one JSON object
per preset, then a JSON list of all of them on the last line.

    python benchmarks/synthetic_scale.py [--presets tiny small paper ml20m] [--no-scenario]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from shared.machine import machine


def measure(name: str, with_scenario: bool) -> dict[str, object]:
    from shared.scenario import ScenarioConfig, build_scenario
    from shared.synthetic import generate_pair, preset

    started = time.perf_counter()
    target, source = generate_pair(preset(name), name=f"synthetic:{name}")
    generated = time.perf_counter() - started
    result: dict[str, object] = {
        "preset": name,
        "target_users": target.n_users,
        "target_ratings": len(target.ratings),
        "source_users": source.n_users,
        "source_ratings": len(source.ratings),
        "generate_seconds": round(generated, 2),
    }
    if with_scenario:
        started = time.perf_counter()
        scenario = build_scenario(target, source, ScenarioConfig())
        result["scenario_seconds"] = round(time.perf_counter() - started, 2)
        result["scenario_target_interactions"] = scenario.table1()["target_interactions"]
    # ru_maxrss is in KiB on Linux
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "paper", "ml20m"])
    parser.add_argument("--no-scenario", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, not args.no_scenario)))
        return
    results = []
    for name in args.presets:
        command = [sys.executable, __file__, "--child", name]
        if args.no_scenario:
            command.append("--no-scenario")
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["machine"] = machine()
        print(json.dumps(result), flush=True)
        results.append(result)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
