import pytest

from shared.identity import IdentityError, SerialRange, normalize_manufacturer, normalize_serial


@pytest.mark.parametrize("raw, expected", [
    ("  acme ", "acme"), ("ACME Corp", "acme-corp"), ("Bosch  Power Tools", "bosch-power-tools"), ("3m", "3m"),
])
def test_manufacturer_normalization(raw, expected):
    assert normalize_manufacturer(raw) == expected


@pytest.mark.parametrize("raw", ["", "  ", "-acme", "acme/corp", "a" * 65, "acme\x00", 42])
def test_manufacturer_rejections(raw):
    with pytest.raises(IdentityError):
        normalize_manufacturer(raw)


@pytest.mark.parametrize("raw, expected", [(" sn-001 ", "SN-001"), ("ab.c_d", "AB.C_D"), ("0", "0")])
def test_serial_normalization(raw, expected):
    assert normalize_serial(raw) == expected


@pytest.mark.parametrize("raw", ["", "SN 001", "SN/001", "SN\x07", "-SN", "S" * 65, "ÄBC", None])
def test_serial_rejections_name_the_problem(raw):
    with pytest.raises(IdentityError, match="serial"):
        normalize_serial(raw)


def test_serial_range_iterates_and_matches_exactly():
    rng = SerialRange(prefix="sn", first=8, last=11, width=4)
    assert list(rng) == ["SN0008", "SN0009", "SN0010", "SN0011"]
    assert rng.count == 4
    assert "SN0008" in rng and "SN0011" in rng
    assert "SN0007" not in rng and "SN0012" not in rng
    assert "SN008" not in rng  # wrong width
    assert "XX0009" not in rng
    assert rng.describe() == "SN0008..SN0011"


def test_unpadded_range_has_no_leading_zeros():
    rng = SerialRange(prefix="A", first=9, last=12)
    assert list(rng) == ["A9", "A10", "A11", "A12"]
    assert "A10" in rng and "A010" not in rng and "A13" not in rng


@pytest.mark.parametrize("kwargs, message", [
    ({"first": 5, "last": 4}, "below first"),
    ({"first": 0, "last": 10_000_000}, "at most"),
    ({"first": 1, "last": 1000, "width": 2}, "does not fit"),
    ({"prefix": "A B", "first": 1, "last": 2}, "prefix"),
])
def test_serial_range_rejections(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SerialRange(**kwargs)


def test_serial_range_numbers_fit_64_bits():
    assert SerialRange(prefix="P", first=10**17, last=10**17 + 5).count == 6
    with pytest.raises(ValueError, match="less than"):
        SerialRange(prefix="P", first=1, last=10**18)
