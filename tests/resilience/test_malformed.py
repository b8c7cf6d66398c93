"""Malformed DICOM (short version of bench/chaos/malformed.py): a generated corpus through STOW-RS and
peer push. Every file is answered with a 4xx or a failure item, never a 5xx; the API does not crash and its
memory stays bounded. ``GATEKEEPER_MALFORMED_FILES`` sets the corpus size (300 in CI; ``make chaos`` 2,000).
"""

from __future__ import annotations

import os

import pytest

from bench.chaos import malformed

pytestmark = pytest.mark.integration
N_FILES = int(os.environ.get("GATEKEEPER_MALFORMED_FILES", malformed.SHORT["files"]))


def test_malformed_corpus_never_gets_a_5xx(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    figures = malformed.run(stack_factory, tmp_path, files=N_FILES)
    print(figures)
