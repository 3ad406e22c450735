"""The harness of each backend, for every module of the conformance suite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.backends.conformance.harness import HARNESSES, Harness, load_harness
from tests.server import traversable_dir


@pytest.fixture(scope="module", params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    workdir = traversable_dir(f"demanager-conformance-{request.param}-")
    built: Harness | None = None
    try:
        built = load_harness(request.param, workdir)
        built.setup()
        yield built
    finally:
        if built is not None:
            built.teardown()
        shutil.rmtree(workdir, ignore_errors=True)


