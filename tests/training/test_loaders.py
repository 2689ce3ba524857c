from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdaliens.training.data import DataConfig, DataFormatError, load_dataset


def write(p: Path, text: str, encoding: str = "utf-8") -> Path:
    p.write_text(text, encoding=encoding)
    return p


def test_embedded_movielens_100k():
    ds = load_dataset("movielens-100k")
    assert len(ds.interactions) == 100_000
    assert ds.interactions["user_id"].nunique() == 943
    assert ds.interactions["item_id"].nunique() == 1682
    assert not ds.implicit
    assert abs(ds.interactions["label"].mean() - 0.554) < 0.001  # ratings >= 4
    assert set(ds.item_field_kinds) == {"release_year", "class"}
    assert set(ds.user_field_kinds) == {"age", "gender", "occupation"}
    assert len(ds.items) == 1682 and len(ds.users) == 943
    assert load_dataset("ml-100k").interactions.shape == ds.interactions.shape


def test_recbole_atomic(tmp_path):
    write(tmp_path / "shop.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
          "u1\ti1\t5\t10\nu1\ti2\t2\t20\nu2\ti1\t4\t15\n")
    write(tmp_path / "shop.item", "item_id:token\tprice:float\ttags:token_seq\ni1\t9.5\ta b\ni2\t3\tc\n")
    write(tmp_path / "shop.user", "user_id:token\tcity:token\nu1\tParis\nu2\tOslo\n")
    for arg in (tmp_path, tmp_path / "shop.inter"):
        ds = load_dataset(arg)
        assert ds.interactions["label"].tolist() == [1.0, 0.0, 1.0]
        assert ds.item_field_kinds == {"price": "numeric", "tags": "multi"}
        assert ds.user_field_kinds == {"city": "categorical"}


def test_recbole_malformed(tmp_path):
    p = write(tmp_path / "bad.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t5\n1\t3\n")
    with pytest.raises(DataFormatError) as e:
        load_dataset(p)
    assert "bad.inter, line 3" in str(e.value) and "3 tab-separated fields" in str(e.value)
    p = write(tmp_path / "bad2.inter", "user_id:token\titem_id:token\trating:float\n1\t2\tfive\n")
    with pytest.raises(DataFormatError, match=r"bad2.inter, line 2: expected a numeric rating; got 'five'"):
        load_dataset(p)
    p = write(tmp_path / "bad3.inter", "user_id\titem_id\n1\t2\n")
    with pytest.raises(DataFormatError, match="line 1: expected a RecBole header"):
        load_dataset(p)


def test_movielens_u_data(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t881250949\n1\t11\t3\t881250950\n2\t10\t4\t881250951\n")
    write(tmp_path / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    genres = ["0"] * 19
    g1 = genres.copy()
    g1[5] = "1"
    write(tmp_path / "u.item", "10|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(g1) + "\n"
          "11|Heat (1995)|01-Jan-1996||http://y|" + "|".join(genres) + "\n", encoding="latin-1")
    ds = load_dataset(tmp_path)
    assert len(ds.interactions) == 3 and ds.interactions["label"].tolist() == [1.0, 0.0, 1.0]
    assert ds.items.set_index("item_id").loc["10", "class"] == "Comedy"
    assert ds.items.set_index("item_id").loc["11", "release_year"] == "1996"
    write(tmp_path / "u.data", "1\t10\t5\t881250949\n1\t11\t3\n")
    with pytest.raises(DataFormatError, match=r"u.data, line 2: expected user<TAB>item<TAB>rating<TAB>timestamp"):
        load_dataset(tmp_path / "u.data")


def test_movielens_ratings_dat(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(tmp_path / "movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James (1996)::Animation|Musical\n")
    ds = load_dataset(tmp_path / "ratings.dat")
    assert ds.interactions["item_id"].tolist() == ["1193", "661"]
    assert ds.items.set_index("item_id").loc["661", "class"] == "Animation Musical"
    assert ds.items.set_index("item_id").loc["1193", "release_year"] == "1975"
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::x::978302109\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat, line 2: expected a numeric rating"):
        load_dataset(tmp_path / "ratings.dat")


def test_sasrec_text(tmp_path):
    p = write(tmp_path / "Beauty.txt", "1 5\n1 7\n2 5\n1 9\n")
    ds = load_dataset(p)
    assert ds.implicit and ds.interactions["label"].isna().all()
    u1 = ds.interactions[ds.interactions["user_id"] == "1"]
    assert u1["item_id"].tolist() == ["5", "7", "9"]  # file order is time order
    assert (np.diff(u1["timestamp"].to_numpy()) > 0).all()
    write(p, "1 5\n1 7 3\n")
    with pytest.raises(DataFormatError, match=r"Beauty.txt, line 2: expected two whitespace-separated fields"):
        load_dataset(p)


def test_csv_with_column_mapping(tmp_path):
    p = write(tmp_path / "log.csv", "uid,movie,stars,when,genre\na,m1,5,2024-01-01T00:00:00Z,x\n"
              "a,m2,1,2024-01-02T00:00:00Z,y\nb,m1,4,2024-01-03T00:00:00Z,x\n")
    cfg = DataConfig(columns={"user_id": "uid", "item_id": "movie", "rating": "stars", "timestamp": "when"},
                     item_columns=["genre"])
    ds = load_dataset(p, cfg)
    assert ds.interactions["label"].tolist() == [1.0, 0.0, 1.0]
    assert ds.interactions["timestamp"].iloc[1] - ds.interactions["timestamp"].iloc[0] == 86400
    assert ds.item_field_kinds == {"genre": "categorical"}
    with pytest.raises(DataFormatError, match=r"log.csv, line 1: expected a column 'nope'"):
        load_dataset(p, {"columns": {"user_id": "nope"}})
    write(p, "user_id,item_id,rating\na,b,3\na,c\n")
    with pytest.raises(DataFormatError, match="log.csv, line 3"):
        load_dataset(p)


def test_parquet(tmp_path):
    p = tmp_path / "log.parquet"
    pd.DataFrame({"userId": [1, 1, 2], "itemId": [3, 4, 3], "ts": [1.0, 2.0, 3.0],
                  "click": [1, 0, 1]}).to_parquet(p)
    ds = load_dataset(p)
    assert not ds.implicit and ds.interactions["label"].tolist() == [1.0, 0.0, 1.0]
    assert ds.interactions["user_id"].tolist() == ["1", "1", "2"]
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataFormatError, match="broken.parquet: expected a Parquet file"):
        load_dataset(tmp_path / "broken.parquet")


def test_unknown_inputs(tmp_path):
    with pytest.raises(Exception, match="no dataset named 'nope'"):
        load_dataset("nope")
    p = write(tmp_path / "weird.log", "a,b,c,d,e\n")
    with pytest.raises(DataFormatError, match="weird.log, line 1: expected a known format"):
        load_dataset(p)
