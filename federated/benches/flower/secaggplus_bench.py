#!/usr/bin/env python3
"""Benchmark Flower's SecAgg+ secure aggregation (PyPI package ``flwr``).

Runs ONE federated round of the real Flower SecAgg+ protocol for N clients with
P float32 parameters each and prints ONE JSON line on stdout.  All other output
(Flower / Ray logs) goes to stderr.

Protocol code that runs (unmodified, imported from ``flwr``):

* server: ``flwr.server.workflow.SecAggPlusWorkflow`` (all four stages) driven
  by ``flwr.server.workflow.DefaultWorkflow`` with a ``FedAvg`` strategy;
* client: a legacy ``ClientApp`` (``NumPyClient``) wrapped by
  ``flwr.client.mod.secaggplus_mod``.

Two ways of moving Flower ``Message`` objects between them:

* ``--mode direct`` (default): a small in-process ``Grid`` implementation
  (``DirectGrid`` below) that hands a deep copy of each message to the node's
  ``ClientApp`` and returns the reply, one client after another, in this
  process.  No Ray, no LinkState, no serialisation.
* ``--mode simulation``: Flower's own ``flwr.simulation.run_simulation`` (Ray
  backend, needs ``flwr[simulation]``).  Clients run in Ray actor processes.

Dropouts: ``round(F * N)`` clients (chosen with ``--seed``) raise an exception
when they receive the 'collect masked vectors' message, i.e. they drop *after*
the 'share keys' stage.  Flower turns that into an error reply, the workflow
marks them dead and, in the 'unmask' stage, reconstructs their ECDH secret key
``sk1`` from Shamir shares and removes their pairwise masks.

What is timed (wall clock, ``time.perf_counter``):

* Server: each workflow stage is timed; the time spent inside
  ``grid.send_and_receive`` (i.e. waiting for / running clients, transport) is
  measured separately and excluded.  ``server_seconds`` =
    (collect-masked-vectors stage, after the replies arrived: deserialise the
     masked vectors, sum them, mod 2**32, legacy FitRes conversion)
  + (unmask stage, everything except the wait for the share replies and except
     ``Strategy.aggregate_fit``: build unmask requests listing active/dead
     neighbours, Shamir-combine every client's seed share / dead clients' sk1,
     regenerate survivors' self masks and the dropped clients' pairwise masks
     with ``pseudo_rand_gen``, subtract/add them, mod, dequantise, un-weight).
  ``Strategy.aggregate_fit`` (FedAvg over N copies of the already-aggregated
  vector, a legacy-compat artefact) is reported separately.
* Client masking: per surviving client, the time of ``secaggplus_mod`` in the
  'collect masked vectors' stage minus the time of the wrapped ``fit`` call
  (measured by an inner mod).  That covers: decrypt the received key shares,
  weight and quantise the update, self mask (PRG from a 32-byte seed), one ECDH
  key agreement + PRG + add/subtract per neighbour, mod 2**32 and serialising
  the masked vector to bytes.  A per-function breakdown is gathered by wrapping
  (not changing) the Flower functions the mod calls.

This script contains no copy of Flower code; it only imports and calls it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

# --- keep stdout clean: everything printed by libraries goes to stderr -------
_JSON_OUT = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr

import numpy as np  # noqa: E402

import flwr  # noqa: E402
import flwr.compat.common.recorddict_compat as compat  # noqa: E402
import importlib  # noqa: E402
from flwr.app import Context, Error, Message, RecordDict  # noqa: E402
from flwr.app.message_type import MessageType  # noqa: E402
from flwr.client import NumPyClient  # noqa: E402
from flwr.client.mod import secaggplus_mod  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode  # noqa: E402
from flwr.common.secure_aggregation.secaggplus_constants import (  # noqa: E402
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.server import LegacyContext, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow  # noqa: E402
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.supercore.run import Run  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

# The *modules* (the package __init__ re-exports a function of the same name).
flwr_secaggplus_mod = importlib.import_module(
    "flwr.client.mod.secure_aggregation.secaggplus_mod"
)
flwr_secaggplus_wf = importlib.import_module(
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow"
)

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"

WHAT_SERVER_COVERS = (
    "Flower SecAggPlusWorkflow server compute for one round, excluding time "
    "spent waiting in grid.send_and_receive: collect-masked-vectors stage after "
    "replies arrive (bytes->ndarray of every masked vector, modular sum, legacy "
    "FitRes conversion) + unmask stage (build active/dead lists, Shamir-combine "
    "every survivor's self-mask seed and every dropped client's ECDH sk1, "
    "regenerate survivors' self masks and dropped clients' pairwise masks with "
    "pseudo_rand_gen (ECDH+HKDF per pair), subtract/add, mod, dequantise, "
    "un-weight). Excludes Strategy.aggregate_fit (reported separately)."
)

# Flower functions wrapped for a per-function time breakdown.  The wrappers call
# the original Flower function unchanged and only accumulate elapsed time.
CLIENT_PATCH_NAMES = (
    "decrypt",
    "generate_shared_key",
    "bytes_to_private_key",
    "bytes_to_public_key",
    "parameters_multiply",
    "quantize",
    "pseudo_rand_gen",
    "parameters_addition",
    "parameters_subtraction",
    "parameters_mod",
    "ndarray_to_bytes",
    "create_shares",
    "generate_key_pairs",
)
SERVER_PATCH_NAMES = (
    "bytes_to_ndarray",
    "combine_shares",
    "generate_shared_key",
    "bytes_to_private_key",
    "bytes_to_public_key",
    "pseudo_rand_gen",
    "parameters_addition",
    "parameters_subtraction",
    "parameters_mod",
    "dequantize",
)


def _install_timing_wrappers(module: Any, names: Iterable[str]) -> dict[str, float]:
    """Wrap module-level names with timers (idempotent, per process)."""
    counters = getattr(module, "_secaggplus_bench_counters", None)
    if counters is not None:
        return counters
    counters = {}
    for name in names:
        orig = getattr(module, name)

        def make(orig_fn: Any, key: str) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return orig_fn(*args, **kwargs)
                finally:
                    counters[key] = counters.get(key, 0.0) + time.perf_counter() - t0

            wrapper.__wrapped__ = orig_fn  # type: ignore[attr-defined]
            return wrapper

        setattr(module, name, make(orig, name))
    module._secaggplus_bench_counters = counters
    return counters


# ---------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------
def client_update(partition_id: int, params: int, seed: int) -> np.ndarray:
    """Deterministic float32 'model update' of one client."""
    rng = np.random.default_rng([seed, partition_id])
    return (rng.standard_normal(params, dtype=np.float32) * np.float32(0.5)).astype(
        np.float32
    )


def dropped_partitions(clients: int, fraction: float, seed: int) -> set[int]:
    k = int(round(fraction * clients))
    return set(random.Random(seed).sample(range(clients), k))


class SimulatedDropout(RuntimeError):
    """Raised by a client that drops out after the share-keys stage."""


class BenchClient(NumPyClient):
    def __init__(self, update: np.ndarray, num_examples: int) -> None:
        self.update = update
        self.num_examples = num_examples

    def get_parameters(self, config):  # type: ignore[no-untyped-def]
        return [self.update]

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        return [self.update], self.num_examples, {}


class ClientTimingMods:
    """Outer/inner mods around ``secaggplus_mod`` that time it per stage.

    Picklable (used inside Ray actors in simulation mode).  Records are appended
    as JSON lines to ``timing_file`` (simulation) or kept in memory (direct).
    """

    def __init__(self, cfg: dict[str, Any], timing_file: str | None) -> None:
        self.cfg = cfg
        self.timing_file = timing_file
        self.records: list[dict[str, Any]] = []
        self._inner = 0.0
        self._dropped = dropped_partitions(
            cfg["clients"], cfg["dropout_fraction"], cfg["seed"]
        )

    def outer(self, msg: Message, ctxt: Context, call_next: Any) -> Message:
        counters = _install_timing_wrappers(flwr_secaggplus_mod, CLIENT_PATCH_NAMES)
        stage = None
        if msg.metadata.message_type == MessageType.TRAIN and msg.has_content():
            cfgs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
            if cfgs is not None:
                stage = cfgs.get(Key.STAGE)
        pid = int(ctxt.node_config[PARTITION_ID])
        if pid in self._dropped and stage in (
            Stage.COLLECT_MASKED_VECTORS,
            Stage.UNMASK,
        ):
            raise SimulatedDropout(f"partition {pid} dropped after share-keys")
        counters.clear()
        self._inner = 0.0
        t0 = time.perf_counter()
        out = call_next(msg, ctxt)
        total = time.perf_counter() - t0
        rec = {
            "pid": pid,
            "stage": stage,
            "total": total,
            "fit": self._inner,
            "secagg": total - self._inner,
            "breakdown": dict(counters),
        }
        if self.timing_file:
            with open(self.timing_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
        else:
            self.records.append(rec)
        return out

    def inner(self, msg: Message, ctxt: Context, call_next: Any) -> Message:
        t0 = time.perf_counter()
        out = call_next(msg, ctxt)
        self._inner += time.perf_counter() - t0
        return out


def make_client_app(cfg: dict[str, Any], timers: ClientTimingMods) -> ClientApp:
    params, seed, num_examples = cfg["params"], cfg["seed"], cfg["num_examples"]

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        pid = int(context.node_config[PARTITION_ID])
        return BenchClient(client_update(pid, params, seed), num_examples).to_client()

    return ClientApp(
        client_fn=client_fn, mods=[timers.outer, secaggplus_mod, timers.inner]
    )


# ---------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------
class TimingGrid(Grid):
    """Delegating Grid that records the time spent in send_and_receive."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.calls: list[tuple[float, float]] = []

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # type: ignore[no-untyped-def]
        return self.inner.create_message(
            content, message_type, dst_node_id, group_id, ttl
        )

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        messages = list(messages)
        t0 = time.perf_counter()
        res = list(self.inner.send_and_receive(messages, timeout=timeout))
        self.calls.append((t0, time.perf_counter()))
        return res


class TimedFedAvg(FedAvg):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aggregate_fit_seconds = 0.0

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        res = super().aggregate_fit(server_round, results, failures)
        self.aggregate_fit_seconds += time.perf_counter() - t0
        return res


class TimedSecAggPlusWorkflow(SecAggPlusWorkflow):
    """SecAggPlusWorkflow whose stages are timed (behaviour unchanged)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage_times: dict[str, dict[str, float]] = {}
        self.breakdown: dict[str, dict[str, float]] = {}
        self.last_state: Any = None
        self.counters = _install_timing_wrappers(
            flwr_secaggplus_wf, SERVER_PATCH_NAMES
        )

    def _timed(self, name: str, fn: Any, grid: Grid, context: Any, state: Any) -> bool:
        assert isinstance(grid, TimingGrid)
        n0 = len(grid.calls)
        self.counters.clear()
        t0 = time.perf_counter()
        ok = fn(grid, context, state)
        t1 = time.perf_counter()
        calls = grid.calls[n0:]
        wait = sum(b - a for a, b in calls)
        rec = {"total": t1 - t0, "grid_wait": wait, "server_compute": t1 - t0 - wait}
        if calls:
            rec["before_send"] = calls[0][0] - t0
            rec["after_receive"] = t1 - calls[-1][1]
        self.stage_times[name] = rec
        self.breakdown[name] = dict(self.counters)
        self.last_state = state
        return ok

    def setup_stage(self, grid, context, state):  # type: ignore[no-untyped-def]
        return self._timed("setup", super().setup_stage, grid, context, state)

    def share_keys_stage(self, grid, context, state):  # type: ignore[no-untyped-def]
        return self._timed("share_keys", super().share_keys_stage, grid, context, state)

    def collect_masked_vectors_stage(self, grid, context, state):  # type: ignore[no-untyped-def]
        return self._timed(
            "collect_masked_vectors",
            super().collect_masked_vectors_stage,
            grid,
            context,
            state,
        )

    def unmask_stage(self, grid, context, state):  # type: ignore[no-untyped-def]
        return self._timed("unmask", super().unmask_stage, grid, context, state)


def _parse_num(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def build_server(cfg: dict[str, Any]):  # type: ignore[no-untyped-def]
    n = cfg["clients"]
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_evaluate_clients=0,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(
            [np.zeros(cfg["params"], dtype=np.float32)]
        ),
    )
    workflow = TimedSecAggPlusWorkflow(
        num_shares=cfg["num_shares"],
        reconstruction_threshold=cfg["reconstruction_threshold"],
        max_weight=cfg["max_weight"],
        clipping_range=cfg["clipping_range"],
        quantization_range=cfg["quantization_range"],
        modulus_range=cfg["modulus_range"],
        timeout=cfg["timeout"],
    )
    out: dict[str, Any] = {}

    def server_main(grid: Grid, context: Context) -> None:
        tgrid = TimingGrid(grid)
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=1), strategy=strategy
        )
        t0 = time.perf_counter()
        DefaultWorkflow(fit_workflow=workflow)(tgrid, legacy)
        out["round_wall_seconds"] = time.perf_counter() - t0
        arr = legacy.state.array_records[MAIN_PARAMS_RECORD]
        out["aggregate"] = parameters_to_ndarrays(
            compat.arrayrecord_to_parameters(arr, keep_input=True)
        )

    return strategy, workflow, server_main, out


class DirectGrid(Grid):
    """In-process Grid: each message (deep-copied, as a transport would) is
    handed to the destination node's ClientApp; exceptions become error replies
    exactly as Flower's simulation engine does."""

    def __init__(self, client_app: ClientApp, clients: int, run_id: int) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        rng = random.SystemRandom()
        self.contexts: dict[int, Context] = {}
        for pid in range(clients):
            nid = rng.randrange(2, 2**63)
            self.contexts[nid] = Context(
                run_id=run_id,
                node_id=nid,
                node_config={PARTITION_ID: pid, NUM_PARTITIONS: clients},
                state=RecordDict(),
                run_config={},
            )
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # type: ignore[no-untyped-def]
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg_id = str(uuid.uuid4())
            msg.metadata.__dict__["_message_id"] = msg_id
            delivered = copy.deepcopy(msg)
            ctx = self.contexts[msg.metadata.dst_node_id]
            try:
                reply = self.client_app(delivered, ctx)
            except Exception as ex:  # pylint: disable=broad-except
                if not isinstance(ex, SimulatedDropout):
                    import traceback

                    traceback.print_exc()
                reply = Message(
                    Error(
                        code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                        reason=f"{type(ex).__name__}: {ex}",
                    ),
                    reply_to=delivered,
                )
            reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self._replies[msg_id] = reply
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        return self.pull_messages(self.push_messages(messages))


def run_direct(cfg: dict[str, Any]) -> tuple[Any, ...]:
    timers = ClientTimingMods(cfg, None)
    client_app = make_client_app(cfg, timers)
    strategy, workflow, server_main, out = build_server(cfg)
    run_id = random.SystemRandom().randrange(1, 2**63)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    grid = DirectGrid(client_app, cfg["clients"], run_id)
    server_ctx = Context(
        run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
    )
    server_main(grid, server_ctx)
    return strategy, workflow, out, timers.records


def run_sim(cfg: dict[str, Any]) -> tuple[Any, ...]:
    from flwr.simulation import run_simulation  # needs flwr[simulation] (ray)

    fd, timing_file = tempfile.mkstemp(prefix="secaggplus_bench_", suffix=".jsonl")
    os.close(fd)
    timers = ClientTimingMods(cfg, timing_file)
    client_app = make_client_app(cfg, timers)
    strategy, workflow, server_main, out = build_server(cfg)
    server_app = ServerApp()
    server_app.main()(server_main)
    backend_config = {
        "client_resources": {"num_cpus": cfg["sim_cpus_per_client"], "num_gpus": 0.0},
        "init_args": {"num_cpus": cfg["sim_total_cpus"], "include_dashboard": False},
    }
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=cfg["clients"],
        backend_config=backend_config,
    )
    with open(timing_file, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    os.unlink(timing_file)
    return strategy, workflow, out, records


def _peak_rss_mib() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:  # pragma: no cover
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--params", type=int, default=10_000)
    ap.add_argument("--dropout-fraction", type=float, default=0.0)
    ap.add_argument("--mode", choices=("direct", "simulation"), default="direct")
    ap.add_argument(
        "--num-shares",
        type=_parse_num,
        default=1.0,
        help="SecAggPlusWorkflow num_shares (Flower has no default). int = count, "
        "float = fraction of sampled clients. Default 1.0 = every client is every "
        "other client's neighbour (complete graph, i.e. classic SecAgg).",
    )
    ap.add_argument(
        "--reconstruction-threshold",
        type=_parse_num,
        default=0.5,
        help="SecAggPlusWorkflow reconstruction_threshold (Flower has no default). "
        "float = fraction of num_shares. Default 0.5.",
    )
    ap.add_argument("--clipping-range", type=float, default=8.0)  # Flower default
    ap.add_argument("--quantization-range", type=int, default=2**22)  # Flower default
    ap.add_argument("--modulus-range", type=int, default=2**32)  # Flower default
    ap.add_argument("--max-weight", type=float, default=1000.0)  # Flower default
    ap.add_argument(
        "--num-examples",
        type=int,
        default=1000,
        help="weight (num_examples) every client reports; default = max_weight, so "
        "the update is quantised at full resolution",
    )
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sim-cpus-per-client", type=float, default=1.0)
    ap.add_argument("--sim-total-cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-check", action="store_true", help="skip correctness check")
    args = ap.parse_args()

    cfg = {
        "clients": args.clients,
        "params": args.params,
        "dropout_fraction": args.dropout_fraction,
        "num_shares": args.num_shares,
        "reconstruction_threshold": args.reconstruction_threshold,
        "clipping_range": args.clipping_range,
        "quantization_range": args.quantization_range,
        "modulus_range": args.modulus_range,
        "max_weight": args.max_weight,
        "num_examples": args.num_examples,
        "timeout": args.timeout,
        "seed": args.seed,
        "sim_cpus_per_client": args.sim_cpus_per_client,
        "sim_total_cpus": args.sim_total_cpus,
    }
    dropped = dropped_partitions(args.clients, args.dropout_fraction, args.seed)

    t_start = time.perf_counter()
    runner = run_direct if args.mode == "direct" else run_sim
    strategy, workflow, out, records = runner(cfg)
    total_wall = time.perf_counter() - t_start

    st = workflow.stage_times
    if "unmask" not in st or "aggregate" not in out:
        raise SystemExit(f"SecAgg+ round did not complete; stage times: {st}")
    collect, unmask = st["collect_masked_vectors"], st["unmask"]
    server_seconds = (
        collect["after_receive"]
        + unmask["server_compute"]
        - strategy.aggregate_fit_seconds
    )

    def stage_recs(stage: str) -> list[dict[str, Any]]:
        return [r for r in records if r["stage"] == stage]

    masking = stage_recs(Stage.COLLECT_MASKED_VECTORS)
    mask_secs = [r["secagg"] for r in masking]
    core_keys = (
        "generate_shared_key",
        "bytes_to_private_key",
        "bytes_to_public_key",
        "parameters_multiply",
        "quantize",
        "pseudo_rand_gen",
        "parameters_addition",
        "parameters_subtraction",
        "parameters_mod",
    )
    core_secs = [sum(r["breakdown"].get(k, 0.0) for k in core_keys) for r in masking]
    prg_secs = [r["breakdown"].get("pseudo_rand_gen", 0.0) for r in masking]

    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    client_breakdown: dict[str, float] = {}
    for r in masking:
        for k, v in r["breakdown"].items():
            client_breakdown[k] = client_breakdown.get(k, 0.0) + v
    client_breakdown = {
        k: v / max(1, len(masking)) for k, v in sorted(client_breakdown.items())
    }

    state = workflow.last_state
    result: dict[str, Any] = {
        "flwr_version": flwr.__version__,
        "clients": args.clients,
        "params": args.params,
        "dropouts": len(dropped),
        "server_seconds": server_seconds,
        "client_masking_seconds_median": med(mask_secs),
        "what_server_covers": WHAT_SERVER_COVERS,
        "mode": args.mode,
        # ---- extras -------------------------------------------------------
        "client_masking_core_seconds_median": med(core_secs),
        "client_masking_prg_seconds_median": med(prg_secs),
        "client_masking_seconds_min": min(mask_secs) if mask_secs else None,
        "client_masking_seconds_max": max(mask_secs) if mask_secs else None,
        "client_masking_clients_measured": len(mask_secs),
        "client_masking_breakdown_mean": client_breakdown,
        "client_setup_seconds_median": med([r["secagg"] for r in stage_recs(Stage.SETUP)]),
        "client_share_keys_seconds_median": med(
            [r["secagg"] for r in stage_recs(Stage.SHARE_KEYS)]
        ),
        "client_unmask_seconds_median": med([r["secagg"] for r in stage_recs(Stage.UNMASK)]),
        "server_collect_after_receive_seconds": collect["after_receive"],
        "server_unmask_seconds_excl_strategy": unmask["server_compute"]
        - strategy.aggregate_fit_seconds,
        "server_strategy_aggregate_fit_seconds": strategy.aggregate_fit_seconds,
        "server_stage_times": st,
        "server_breakdown": workflow.breakdown,
        "num_shares": int(state.num_shares) if state is not None else None,
        "reconstruction_threshold": int(state.threshold) if state is not None else None,
        "num_shares_arg": args.num_shares,
        "reconstruction_threshold_arg": args.reconstruction_threshold,
        "clipping_range": args.clipping_range,
        "quantization_range": args.quantization_range,
        "modulus_range": args.modulus_range,
        "max_weight": args.max_weight,
        "num_examples": args.num_examples,
        "round_wall_seconds": out.get("round_wall_seconds"),
        "total_wall_seconds": total_wall,
        "peak_rss_mib_driver": _peak_rss_mib(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "loadavg_1m_at_end": os.getloadavg()[0],
    }

    if not args.no_check:
        survivors = [p for p in range(args.clients) if p not in dropped]
        acc = np.zeros(args.params, dtype=np.float64)
        for p in survivors:
            acc += client_update(p, args.params, args.seed)
        expected = acc / len(survivors)
        got = np.asarray(out["aggregate"][0], dtype=np.float64)
        result["check_max_abs_error_vs_plain_mean"] = float(np.max(np.abs(got - expected)))

    _JSON_OUT.write(json.dumps(result) + "\n")
    _JSON_OUT.flush()


if __name__ == "__main__":
    main()
