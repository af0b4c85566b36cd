"""The reference's forward pass, line by line (``parity.core.steps.Step``).

A ``TorchDispatchMode`` sees every aten operation with its result; the innermost Python
frame inside the reference's own source files says which line of ``forward`` asked for it.
Consecutive operations of one line form a step, whose value is the last floating result: the
value a reader of ``forward`` knows by that line's name. Which steps a step reads is followed
through the tensors themselves, so a step that feeds nothing the port matches can be told
from one the port merely never materialises (``parity.diagnosis.localize``).
"""

from __future__ import annotations

import inspect
import linecache
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from parity.backends.torch.error_bound import RunningErrorBound
from parity.core.errors import NoErrorRule
from parity.core.steps import Step

_TORCH_DIR = os.path.dirname(torch.__file__)


def source_files(module: torch.nn.Module) -> set[str]:
    """The files that define the module's classes, PyTorch's own aside: the lines a step
    is named after."""
    files = set()
    for sub in module.modules():
        try:
            path = inspect.getsourcefile(type(sub))
        except TypeError:  # a class defined outside any file
            continue
        if path and not os.path.abspath(path).startswith(_TORCH_DIR):
            files.add(path)
    return files


@dataclass
class _Record:
    key: tuple[str, int]
    value: torch.Tensor | None = None
    op: str = ""
    inputs: tuple = ()
    arguments: tuple = ()
    parents: set = field(default_factory=set)
    ops: list = field(default_factory=list)  # (operation, args, kwargs, result), in order


class _StepRecorder(TorchDispatchMode):
    def __init__(self, files: set[str], x: torch.Tensor):
        super().__init__()
        self.files = files
        self.records = [_Record(("input", 0), x, "input")]
        self.producer = {id(x): 0}
        self.alive = [x]  # ids stay unique while the tensors live

    def _line(self) -> tuple[str, int] | None:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename in self.files:
                return frame.f_code.co_filename, frame.f_lineno
            frame = frame.f_back
        return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        key = self._line()
        if key is None:
            return out
        operands = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if self.records[-1].key != key or len(self.records) == 1:
            self.records.append(_Record(key))
        record = self.records[-1]
        index = len(self.records) - 1
        record.parents |= {self.producer[id(a)] for a in operands if id(a) in self.producer}
        record.parents.discard(index)
        record.ops.append((func, args, kwargs, out))
        results = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        floating = [t for t in results if t.is_floating_point()]
        for tensor in floating:
            self.producer[id(tensor)] = index
            self.alive.append(tensor)
        if floating:
            record.value = floating[0]
            record.op = func.overloadpacket.__name__
            record.inputs = tuple(a for a in operands if a.is_floating_point())
            record.arguments = tuple(
                a for a in tree_flatten(args)[0] if not isinstance(a, torch.Tensor)
            )
        return out

    def steps(self) -> list[_Record]:
        """The records with a floating value, their parents renumbered among them (a record
        without one produced nothing that another reads)."""
        kept = [i for i, r in enumerate(self.records) if r.value is not None]
        new = {old: index for index, old in enumerate(kept)}
        steps = []
        for old in kept:
            record = self.records[old]
            record.parents = {new[p] for p in record.parents if p in new}
            steps.append(record)
        return steps


def _record(module: torch.nn.Module, x: torch.Tensor, bound: RunningErrorBound | None):
    recorder = _StepRecorder(source_files(module), x)
    with torch.no_grad():
        if bound is None:
            with recorder:
                module(x)
        else:
            with bound, recorder:
                module(x)
    return recorder.steps()


def _recompute(records: list[_Record], index: int) -> Callable[[dict], np.ndarray]:
    """The step's operations run again with some of its parents' values replaced
    (``{parent index: array}``): what the line computes from other inputs."""
    produced_by = {id(r.value): i for i, r in enumerate(records)}

    def recompute(replaced: dict[int, np.ndarray]) -> np.ndarray:
        memo: dict[int, torch.Tensor] = {}

        def substitute(value):
            if not isinstance(value, torch.Tensor):
                return value
            if id(value) in memo:
                return memo[id(value)]
            parent = produced_by.get(id(value))
            if parent in replaced:
                return torch.from_numpy(np.ascontiguousarray(replaced[parent]))
            return value

        result = None
        with torch.no_grad():
            for func, args, kwargs, out in records[index].ops:
                result = func(*tree_map(substitute, args), **tree_map(substitute, kwargs))
                for old, new in zip(tree_flatten(out)[0], tree_flatten(result)[0], strict=False):
                    if isinstance(old, torch.Tensor):
                        memo[id(old)] = new
        floating = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
        return floating[0].detach().double().numpy()

    return recompute


def record_steps(
    module64: torch.nn.Module, module32: torch.nn.Module, x64, x32, precision: str
) -> list[Step]:
    """The steps of the reference's forward pass on ``x``: float64 values with their running
    error bound (none where an operation has no rule), and the same steps' values in the
    compute dtype where that run took the same lines."""
    deviations = None
    try:
        bound = RunningErrorBound(precision)
        truth = _record(module64, x64, bound)
        deviations = [bound.deviation(r.value).detach().numpy() for r in truth]
    except NoErrorRule:
        truth = _record(module64, x64, None)
    low = _record(module32, x32, None)
    same_lines = [r.key for r in low] == [r.key for r in truth]
    steps = []
    for i, record in enumerate(truth):
        path, line = record.key
        where = "the input" if i == 0 else f"{os.path.basename(path)}:{line}"
        source = "x" if i == 0 else linecache.getline(path, line).strip()
        steps.append(
            Step(
                index=i,
                where=where,
                source=source,
                op=record.op,
                truth=record.value.detach().double().numpy().copy(),
                reference=low[i].value.detach().double().numpy().copy() if same_lines else None,
                deviation=None if deviations is None else deviations[i],
                parents=tuple(sorted(record.parents)),
                op_inputs=tuple(t.detach().double().numpy().copy() for t in record.inputs),
                op_arguments=record.arguments,
                recompute=_recompute(truth, i) if i else None,
            )
        )
    return steps
