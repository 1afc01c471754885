import numpy as np
import pytest

from hashing.codes.bits import from_lsb_first, pack, unpack
from hashing.core.errors import HashingError
from hashing.codes.hamming import distances as hamming
from hashing.core.validation import code_bits


def test_pack_unpack_round_trip(rng):
    for bits in (8, 64, 512, 1024):
        b = rng.integers(0, 2, (37, bits)).astype(np.uint8)
        packed = pack(b)
        assert packed.dtype == np.uint8 and packed.shape == (37, bits // 8)
        assert np.array_equal(unpack(packed, bits), b)


def test_bit_order_is_numpy_default_big_endian():
    b = np.zeros((1, 16), np.uint8)
    b[0, 0] = 1            # first bit -> most significant bit of byte 0
    b[0, 15] = 1           # last bit -> least significant bit of byte 1
    assert pack(b).tolist() == [[0b10000000, 0b00000001]]


def test_hamming_matches_python_popcount(rng):
    xq = rng.integers(0, 256, (5, 9), dtype=np.uint8)     # 72 bits: not a multiple of 64, byte path
    xb = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    expected = [[sum(bin(a ^ b).count("1") for a, b in zip(q, d)) for d in xb] for q in xq]
    assert hamming(xq, xb).tolist() == expected
    xq8, xb8 = rng.integers(0, 256, (3, 64), dtype=np.uint8), rng.integers(0, 256, (4, 64), dtype=np.uint8)
    assert hamming(xq8, xb8).tolist() == [[int(np.unpackbits(q ^ d).sum()) for d in xb8] for q in xq8]


@pytest.mark.parametrize("bad", [0, 4, 12, 1032, 2048, "64", 64.0, True])
def test_code_bits_rejects(bad):
    with pytest.raises(HashingError):
        code_bits(bad)


def test_lsb_first_codes_come_into_our_order():
    # LSB-first: bit 0 is the least significant bit of byte 0, bit 15 the most significant of byte 1.
    lsb = np.array([[0b00000001, 0b10000000]], np.uint8)
    assert from_lsb_first(lsb, 16).tolist() == [[0b10000000, 0b00000001]]
