"""The data set shipped in data/: what data/README.md says about it is true."""

from __future__ import annotations

import hashlib
import re

import pandas as pd
import pytest
from conftest import ROOT, SHIPPED_CSV

from steps.data import FEATURES, STATLIB_COLUMNS, TARGET, load_dataset

SHARED_CSV = ROOT.parent / "shared" / "data" / "cal_housing.csv"


def test_readme_checksum_size_and_counts_match_the_file():
    readme = (ROOT / "data" / "README.md").read_text()
    data = SHIPPED_CSV.read_bytes()
    assert re.search(r"SHA-256 `([0-9a-f]{64})`", readme).group(1) == hashlib.sha256(data).hexdigest()
    assert f"{len(data):,} bytes" in readme
    raw = pd.read_csv(SHIPPED_CSV)
    assert list(raw.columns) == list(STATLIB_COLUMNS)
    assert len(raw) == 20_640 and not raw.isna().any().any()
    assert (raw["median_house_value"] == 500_001).sum() == 965  # "965 districts" in the README
    assert (raw["median_house_value"] >= 500_000).sum() == 992
    assert (raw["median_income"] == 15.0001).sum() == 49
    assert raw["housing_median_age"].max() == 52


def test_shipped_file_loads_as_scikit_learns_data_set():
    data = load_dataset(str(SHIPPED_CSV))
    assert data.shape == (20_640, 9) and list(data.columns) == [*FEATURES, TARGET]
    # fetch_california_housing's first district and target range
    assert data.iloc[0].to_list() == pytest.approx(
        [8.3252, 41.0, 6.984127, 1.02381, 322.0, 2.555556, 37.88, -122.23, 4.526], rel=1e-5
    )
    assert data[TARGET].min() == pytest.approx(0.14999) and data[TARGET].max() == pytest.approx(5.00001)


@pytest.mark.skipif(not SHARED_CSV.exists(), reason="the original six-decimal StatLib CSV is not on this machine")
def test_compact_file_is_exactly_the_original_after_load():
    pd.testing.assert_frame_equal(load_dataset(str(SHIPPED_CSV)), load_dataset(str(SHARED_CSV)), check_exact=True)
