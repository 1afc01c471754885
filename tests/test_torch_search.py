import numpy as np
import pytest
import torch

from hashing.model import knn as torch_search
from hashing.codes.hamming import distances as numpy_hamming


def test_popcount64_matches_python_on_edge_words():
    words = [0, 1, -1, 2**63 - 1, -(2**63), 0x5555555555555555, -0x5555555555555556, 0x00FF00FF00FF00FF]
    got = torch_search.popcount64(torch.tensor(words, dtype=torch.int64)).tolist()
    assert got == [bin(w & (2**64 - 1)).count("1") for w in words]


def test_hamming_matches_numpy_for_word_and_byte_widths(rng):
    for nbytes in (64, 9):
        xq = rng.integers(0, 256, (7, nbytes), dtype=np.uint8)
        xb = rng.integers(0, 256, (300, nbytes), dtype=np.uint8)
        got = torch_search._chunk_popcount(*(torch_search.as_words(torch.from_numpy(c)) for c in (xq, xb))).numpy()
        assert np.array_equal(got, numpy_hamming(xq, xb))


@pytest.mark.parametrize("method,db_chunk", [("popcount", None), ("popcount", 300), ("matmul", None), ("matmul", 300)])
def test_search_equals_faiss_flat(rng, tmp_path, method, db_chunk):
    """Both distance methods, with the database in one chunk or merged across several."""
    from hashing.indexes import IndexInfo, create

    centres = rng.integers(0, 2, (10, 128))
    bits = centres[rng.integers(0, 10, 2000)] ^ (rng.random((2000, 128)) < 0.05)
    xb = np.packbits(bits.astype(bool), axis=1)
    xq = xb[:25]
    index = create(str(tmp_path / "i"), IndexInfo(bits=128, model={"run_dir": "", "fingerprint": None, "bits": 128}))
    index.add(xb, None, [""] * len(xb))
    D1, I1 = index.search(xq, 15)
    D2, I2 = torch_search.knn(torch.from_numpy(xq), torch.from_numpy(xb), 15, query_chunk=10,
                                  method=method, db_chunk=db_chunk)
    assert np.array_equal(D1, D2.numpy())
    full = numpy_hamming(xq, xb)
    for q in range(len(xq)):
        assert np.array_equal(full[q][I2[q].numpy()], D1[q])
        kth = D1[q, -1]
        assert set(I1[q][D1[q] < kth]) == set(I2[q].numpy()[D1[q] < kth])


def test_k_larger_than_database_is_capped(rng):
    xb = rng.integers(0, 256, (5, 8), dtype=np.uint8)
    D, I = torch_search.knn(torch.from_numpy(xb[:2]), torch.from_numpy(xb), 10)
    assert D.shape == (2, 5) and I[0, 0] == 0 and D[0, 0] == 0


def test_unknown_method_is_refused(rng):
    xb = torch.from_numpy(rng.integers(0, 256, (5, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="method"):
        torch_search.knn(xb, xb, 1, method="bogus")
