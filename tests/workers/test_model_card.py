"""Model cards: built from the checkpoint itself, licences per case, and refused registrations."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from app.services.storage import file_sha256
from testkit.tiny_models import train_tiny_scorer, train_tiny_segmenter
from tests.conftest import ROOT
from workers.training.model_card import build_card, card_markdown, licence_of


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cards")
    return train_tiny_scorer(tmp / "scorer"), train_tiny_segmenter(tmp / "segmenter")


def test_training_writes_a_card_that_matches_its_weights(tiny) -> None:  # type: ignore[no-untyped-def]
    for checkpoint, kind in zip(tiny, ("scorer", "segmenter"), strict=True):
        card = build_card(checkpoint)
        assert card["kind"] == kind and card["sha256"] == file_sha256(checkpoint)
        assert card["train_cases"] == ["sample"] and card["redistributable"] is True  # Apache-2.0 sample only
        written = checkpoint.with_name(f"{checkpoint.stem}.card.md").read_text()
        assert card["sha256"] in written and "Apache-2.0" in written
    assert "threshold" in build_card(tiny[0])["metrics"]  # the scorer's calibration is on its card


def test_non_commercial_data_makes_research_weights(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ckpt = torch.load(tiny[0], weights_only=False)
    ckpt["metadata"]["data"]["per_case"] = {"ircadb-17": 76, "sample": 20}
    torch.save(ckpt, tmp_path / "nc.pt")
    card = build_card(tmp_path / "nc.pt")
    assert card["redistributable"] is False and "never commit" in card_markdown(card)
    assert licence_of("somewhere-else") == ("unknown: not in the licence table", False)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv/bin/gatekeeper"), *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_registry_refuses_what_is_not_a_checkpoint_of_that_kind(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"GATEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "GATEKEEPER_MODELS_DIR": str(tmp_path / "m")}
    assert _cli(env, "db", "upgrade").returncode == 0
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    out = _cli(env, "models", "register", "--kind", "scorer", "--file", str(junk))
    assert out.returncode == 2 and "not a checkpoint written by train-scorer" in out.stdout + out.stderr
    out = _cli(env, "models", "register", "--kind", "scorer", "--file", str(tiny[1]))
    assert out.returncode == 2 and "is a segmenter checkpoint, not a scorer" in out.stdout + out.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())  # nothing copied
    out = _cli(env, "models", "register", "--kind", "scorer", "--file", str(tiny[0]))
    assert out.returncode == 0, out.stderr
    assert "Apache-2.0" in _cli(env, "models", "card", str(tiny[0])).stdout


def test_a_segmenters_held_out_case_does_not_bind_its_weights(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the in-training held-out case is only measured (the final checkpoint is the last step's), unlike a
    # scorer's held-out cases, whose threshold the file carries
    seg = torch.load(tiny[1], weights_only=False)
    seg["metadata"]["config"]["data"]["heldout"]["name"] = "ircadb-01"
    torch.save(seg, tmp_path / "seg.pt")
    card = build_card(tmp_path / "seg.pt")
    assert card["heldout_cases"] == ["ircadb-01"] and card["redistributable"] is True
    assert "`ircadb-01` (held-out, measured only)" in card_markdown(card)
    seg["metadata"]["data"]["per_case"] = {"ircadb-17": 76, "sample": 20}  # trained on it: research weights
    torch.save(seg, tmp_path / "seg-nc.pt")
    assert build_card(tmp_path / "seg-nc.pt")["redistributable"] is False


def test_the_segmenters_licence_note_follows_its_training_cases() -> None:
    from workers.training.segmenter_data import MaskedCase, SegmenterDataConfig
    from workers.training.segmenter_training import licence_note

    def data(*names: str) -> SegmenterDataConfig:
        cases = tuple(MaskedCase(n, "ct", "mask") for n in names)
        return SegmenterDataConfig(train=cases, heldout=MaskedCase("ircadb-01", "ct", "mask"))

    assert licence_note(data("totalseg-s0009", "totalseg-example-3mm")).startswith("trained only on data whose")
    assert licence_note(data("totalseg-s0009", "ircadb-17")) == (
        "research weights: trained on data that forbids redistribution (ircadb-17)"
    )


def test_every_committed_weight_file_matches_its_sum_and_may_be_shipped() -> None:
    weights = ROOT / "models" / "weights"
    sums = dict(reversed(line.split("  ")) for line in (weights / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == sorted(p.name for p in weights.glob("*.pt")), "a .pt without a line in SHA256SUMS"
    for name, digest in sums.items():
        card = build_card(weights / name)
        assert file_sha256(weights / name) == digest == card["sha256"], name
        assert card["redistributable"] is True, f"{name}: {card['licences']}"
        assert digest in (weights / name.replace(".pt", ".card.md")).read_text(), f"{name}: its card is stale"
