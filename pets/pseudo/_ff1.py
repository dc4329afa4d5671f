"""FF1 format-preserving encryption (NIST SP 800-38G Rev. 1) on ``cryptography``'s AES.

AES itself comes from ``cryptography``; FF1's PRF is AES-CBC-MAC with a zero IV, built here from
single-block AES-ECB calls as the standard prescribes (SP 800-38G §4.4 / Algorithm 6).

Two implementations of the same Feistel rounds:

* **vectorized** — when ``radix^ceil(n/2) < 2^64`` (e.g. up to 38 decimal digits) a whole group
  of equal-length values is encrypted with *one* AES-ECB call per Feistel round: the halves are
  kept as ``uint64`` integers, the last CBC-MAC block of every row is assembled in a numpy
  buffer, and ``y mod radix^m`` is computed in ``uint64`` (or exactly in Python integers when
  ``y`` has 96 bits);
* **scalar** — Python integers, for everything else (long values), and the reference that the
  vectorized path is tested against.

Rev. 1 rules are enforced: ``radix^minlen >= 1,000,000`` (and ``minlen >= 2``), a maximum length,
radix 2..62 for alphabets (2..65536 for raw numerals), tweaks up to 256 bytes.

Examples:
    >>> ff1 = FF1(bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C"), "0123456789")
    >>> ff1.encrypt("0123456789")          # NIST FF1 sample 1
    '2433477484'
    >>> ff1.decrypt("2433477484")
    '0123456789'
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pets._errors import InputError
from pets._events import AuditHook
from pets.jurisdiction import Context
from pets.keys import Secret
from pets.pseudo._base import KeyedTransform
from pets.pseudo._columnar import series_from_arrow
from pets.pseudo._text import _kind, column_label, to_arrow_strings

__all__ = ["DIGITS", "FF1", "FF1Transform", "PhoneFF1", "ff1_min_length"]

DIGITS = "0123456789"
ALPHANUMERIC = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
MIN_DOMAIN = 1_000_000
MAX_RADIX_ALPHABET = 62
MAX_RADIX = 1 << 16
DEFAULT_MAX_LEN = 256
HARD_MAX_LEN = 4096
MAX_TWEAK = 256
_ROUNDS = 10


def ff1_min_length(radix: int) -> int:
    """The Rev. 1 minimum length: the smallest ``n >= 2`` with ``radix**n >= 1,000,000``.

    Examples:
        >>> ff1_min_length(10), ff1_min_length(36), ff1_min_length(2)
        (6, 4, 20)
    """
    n = 2
    while radix**n < MIN_DOMAIN:
        n += 1
    return n


class _Params:
    """Per-length constants: halves, byte lengths, the CBC-MAC state after P and fixed blocks."""

    __slots__ = ("b", "d", "last_prefix", "n", "p", "qconst", "simple", "u", "v", "vector",
                 "words", "y0")

    def __init__(self, ff1: FF1, n: int, tweak: bytes) -> None:
        radix = ff1.radix
        self.n = n
        self.u = u = n // 2
        self.v = v = n - u
        self.b = b = -(-((radix**v - 1).bit_length()) // 8)
        self.d = 4 * -(-b // 4) + 4
        t = len(tweak)
        self.p = (bytes([1, 2, 1]) + radix.to_bytes(3, "big") + bytes([10, u % 256])
                  + n.to_bytes(4, "big") + t.to_bytes(4, "big"))
        self.qconst = qconst = tweak + bytes((-t - b - 1) % 16)
        # When [i] || NUM(B) fits in Q's last block, everything before it is constant: its
        # CBC-MAC state is computed once, and each round costs one AES call per value.
        self.simple = 1 + b <= 16
        if self.simple:
            full = (len(qconst) + 1 + b) // 16 - 1
            self.y0 = ff1._cbc_mac(self.p + qconst[: 16 * full])
            self.last_prefix = qconst[16 * full:]
            self.words = [self.round_words(i) for i in range(_ROUNDS)]
        else:
            self.y0, self.last_prefix, self.words = b"", b"", []
        self.vector = self.simple and radix**v < 2**64 and self.d <= 16

    def round_words(self, i: int) -> tuple[int, int]:
        """``Y0 xor (prefix || i || 0^b)`` as two big-endian 64-bit words."""
        block = self.last_prefix + bytes([i]) + bytes(self.b)
        x = int.from_bytes(self.y0, "big") ^ int.from_bytes(block, "big")
        return x >> 64, x & 0xFFFFFFFFFFFFFFFF


class FF1:
    """The FF1 block cipher mode over an alphabet (or raw numerals of a radix).

    Args:
        key: AES key of 16, 24 or 32 bytes.
        alphabet: The characters, in numeral order (2..62 distinct ASCII characters), or an
            ``int`` radix (2..65536) to work on numeral lists only.
        tweak: Default tweak bytes (0..256).
        max_len: Longest value accepted (at most 4096 numerals).

    Raises:
        InputError: Bad key length, alphabet, radix, tweak or max_len.
    """

    def __init__(self, key: bytes, alphabet: str | int = DIGITS, *, tweak: bytes = b"",
                 max_len: int = DEFAULT_MAX_LEN) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
            raise InputError("FF1 key must be 16, 24 or 32 bytes")
        if isinstance(alphabet, int) and not isinstance(alphabet, bool):
            if not 2 <= alphabet <= MAX_RADIX:
                raise InputError(f"FF1 radix must be 2..{MAX_RADIX}, got {alphabet}")
            self.alphabet: str | None = None
            self.radix = alphabet
        elif isinstance(alphabet, str):
            if not 2 <= len(alphabet) <= MAX_RADIX_ALPHABET:
                raise InputError(
                    f"FF1 alphabet must have 2..{MAX_RADIX_ALPHABET} characters, "
                    f"got {len(alphabet)}")
            if len(set(alphabet)) != len(alphabet) or not alphabet.isascii():
                raise InputError("FF1 alphabet must be distinct ASCII characters")
            self.alphabet = alphabet
            self.radix = len(alphabet)
        else:
            raise InputError("FF1 alphabet must be a string or an integer radix")
        if not isinstance(max_len, int) or not 2 <= max_len <= HARD_MAX_LEN:
            raise InputError(f"FF1 max_len must be 2..{HARD_MAX_LEN}")
        self.min_len = ff1_min_length(self.radix)
        if max_len < self.min_len:
            raise InputError(f"FF1 max_len {max_len} is below the minimum length {self.min_len}")
        self.max_len = max_len
        self.tweak = self._check_tweak(tweak)
        self._aes = algorithms.AES(bytes(key))
        self._params: dict[tuple[int, bytes], _Params] = {}
        self._tables: dict[int, np.ndarray] = {}
        if self.alphabet is not None:
            lut = np.full(256, 255, dtype=np.uint8)
            for i, ch in enumerate(self.alphabet):
                lut[ord(ch)] = i
            self._lut = lut
            self._chars = np.frombuffer(self.alphabet.encode("ascii"), dtype=np.uint8)

    def __repr__(self) -> str:
        return f"FF1(radix={self.radix}, key=<hidden>)"

    def __reduce__(self) -> Any:
        raise TypeError("FF1 holds a key and cannot be pickled")

    @staticmethod
    def _check_tweak(tweak: bytes) -> bytes:
        if not isinstance(tweak, bytes | bytearray) or len(tweak) > MAX_TWEAK:
            raise InputError(f"FF1 tweak must be bytes of length 0..{MAX_TWEAK}")
        return bytes(tweak)

    # -- AES ------------------------------------------------------------------------------

    def _ecb(self, data: bytes) -> bytes:
        enc = Cipher(self._aes, modes.ECB()).encryptor()  # noqa: S305 - FF1's PRF building block
        return enc.update(data) + enc.finalize()

    def _cbc_mac(self, data: bytes) -> bytes:
        y = bytes(16)
        for i in range(0, len(data), 16):
            block = bytes(a ^ c for a, c in zip(y, data[i:i + 16], strict=True))
            y = self._ecb(block)
        return y

    def _param(self, n: int, tweak: bytes) -> _Params:
        key = (n, tweak)
        p = self._params.get(key)
        if p is None:
            if len(self._params) > 4096:
                self._params.clear()
            p = self._params[key] = _Params(self, n, tweak)
        return p

    def _check_len(self, n: int, what: str = "value") -> None:
        if n < self.min_len:
            raise InputError(
                f"{what} has {n} numerals; FF1 needs at least {self.min_len} for radix "
                f"{self.radix} (radix^len >= {MIN_DOMAIN:,})")
        if n > self.max_len:
            raise InputError(f"{what} has {n} numerals; at most {self.max_len} allowed")

    # -- scalar reference ----------------------------------------------------------------

    @staticmethod
    def _round_y(enc: Any, p: _Params, i: int, x: int) -> int:
        if p.simple:
            k0, k1 = p.words[i]
            r = enc.update((((k0 << 64) | k1) ^ x).to_bytes(16, "big"))
        else:
            data = p.p + p.qconst + bytes([i]) + x.to_bytes(p.b, "big")
            y = 0
            for j in range(0, len(data), 16):
                y = int.from_bytes(enc.update(
                    (y ^ int.from_bytes(data[j:j + 16], "big")).to_bytes(16, "big")), "big")
            r = y.to_bytes(16, "big")
        if p.d <= 16:
            return int.from_bytes(r[: p.d], "big")
        ri = int.from_bytes(r, "big")
        s = r
        j = 1
        while len(s) < p.d:
            s += enc.update((ri ^ j).to_bytes(16, "big"))
            j += 1
        return int.from_bytes(s[: p.d], "big")

    def encrypt_numerals(self, x: Sequence[int], tweak: bytes | None = None) -> list[int]:
        """Encrypt a numeral list (scalar path; SP 800-38G Algorithm 7)."""
        return self._crypt_numerals(x, tweak, encrypt=True)

    def decrypt_numerals(self, x: Sequence[int], tweak: bytes | None = None) -> list[int]:
        """Decrypt a numeral list (scalar path; SP 800-38G Algorithm 8)."""
        return self._crypt_numerals(x, tweak, encrypt=False)

    def _crypt_numerals(self, x: Sequence[int], tweak: bytes | None, *,
                        encrypt: bool) -> list[int]:
        radix = self.radix
        n = len(x)
        self._check_len(n)
        if any(not 0 <= d < radix for d in x):
            raise InputError(f"numeral outside radix {radix}")
        t = self.tweak if tweak is None else self._check_tweak(tweak)
        p = self._param(n, t)
        a = _num(x[: p.u], radix)
        b = _num(x[p.u:], radix)
        mu, mv = radix**p.u, radix**p.v
        enc = Cipher(self._aes, modes.ECB()).encryptor()  # noqa: S305 - FF1's PRF
        if encrypt:
            for i in range(_ROUNDS):
                y = self._round_y(enc, p, i, b)
                c = (a + y) % (mu if i % 2 == 0 else mv)
                a, b = b, c
        else:
            for i in reversed(range(_ROUNDS)):
                y = self._round_y(enc, p, i, a)
                c = (b - y) % (mu if i % 2 == 0 else mv)
                b, a = a, c
        return _digits(a, p.u, radix) + _digits(b, p.v, radix)

    def encrypt(self, text: str, tweak: bytes | None = None) -> str:
        """Encrypt one string over the alphabet."""
        return self._crypt_text(text, tweak, encrypt=True)

    def decrypt(self, text: str, tweak: bytes | None = None) -> str:
        """Decrypt one string over the alphabet."""
        return self._crypt_text(text, tweak, encrypt=False)

    def _crypt_text(self, text: str, tweak: bytes | None, *, encrypt: bool) -> str:
        if self.alphabet is None:
            raise InputError("this FF1 works on numerals: use encrypt_numerals")
        alphabet = self.alphabet
        self._check_len(len(text))
        try:
            x = [alphabet.index(ch) for ch in text]
        except ValueError:
            raise InputError("value has characters outside the FF1 alphabet") from None
        out = self._crypt_numerals(x, tweak, encrypt=encrypt)
        return "".join(alphabet[d] for d in out)

    # -- vectorized ----------------------------------------------------------------------

    def _round_y_vec(self, p: _Params, i: int, x: np.ndarray, modulus: int,
                     enc: Any, buf: np.ndarray, res: np.ndarray) -> np.ndarray:
        """``y mod modulus`` for every row, one AES-ECB call for the whole column.

        The last CBC-MAC block of row r is ``Y0 xor (prefix || i || NUM(B_r))``; as two
        big-endian 64-bit words that is ``[K0, K1 xor B_r]`` with constants K0, K1 (``b <= 8``).
        """
        k0, k1 = p.words[i]
        buf[:, 0] = k0
        buf[:, 1] = np.bitwise_xor(x, np.uint64(k1))
        enc.update_into(buf.view(np.uint8).reshape(-1), res.view(np.uint8))
        r = res[: len(x) * 2].view(">u8").reshape(len(x), 2)
        if p.d == 8:
            return r[:, 0].astype(np.uint64) % np.uint64(modulus)
        w0 = r[:, 0].astype(np.uint64)
        w1 = r[:, 1].astype(np.uint64)
        hi = (w0 >> np.uint64(32)).astype(object)
        lo = ((w0 & np.uint64(0xFFFFFFFF)) << np.uint64(32)) | (w1 >> np.uint64(32))
        ymod = ((hi << 64) + lo.astype(object)) % modulus
        return np.asarray(ymod.astype(np.uint64), dtype=np.uint64)

    def crypt_matrix(self, numerals: np.ndarray, tweak: bytes | None = None, *,
                     encrypt: bool = True) -> np.ndarray:
        """Encrypt/decrypt equal-length numeral rows (``(rows, n)`` uint array) at once.

        Uses the vectorized rounds when ``radix^ceil(n/2) < 2^64``, else the scalar path.
        """
        if (not isinstance(numerals, np.ndarray) or numerals.ndim != 2
                or not np.issubdtype(numerals.dtype, np.integer)):
            raise InputError("FF1 numerals must be a 2-D integer array (rows, length)")
        rows, n = numerals.shape
        self._check_len(n)
        radix = self.radix
        if rows and (int(numerals.max()) >= radix or int(numerals.min()) < 0):
            raise InputError(f"numeral outside radix {radix}")
        t = self.tweak if tweak is None else self._check_tweak(tweak)
        p = self._param(n, t)
        if not p.vector:
            out = [self._crypt_numerals(list(map(int, row)), t, encrypt=encrypt)
                   for row in numerals]
            return np.array(out, dtype=np.uint32).reshape(rows, n)
        if rows == 0:
            return numerals.astype(np.uint32)
        a = _num_vec(numerals[:, : p.u], radix)
        b = _num_vec(numerals[:, p.u:], radix)
        mu, mv = radix**p.u, radix**p.v
        enc = Cipher(self._aes, modes.ECB()).encryptor()  # noqa: S305 - FF1's PRF
        buf = np.empty((rows, 2), dtype=">u8")
        res = np.empty(rows * 2 + 2, dtype=np.uint64)  # update_into needs a spare block
        if encrypt:
            for i in range(_ROUNDS):
                m = mu if i % 2 == 0 else mv
                y = self._round_y_vec(p, i, b, m, enc, buf, res)
                a, b = b, _addmod(a, y, m)
        else:
            for i in reversed(range(_ROUNDS)):
                m = mu if i % 2 == 0 else mv
                y = self._round_y_vec(p, i, a, m, enc, buf, res)
                b, a = a, _submod(b, y, m)
        return np.concatenate([self._digits_vec(a, p.u), self._digits_vec(b, p.v)], axis=1)

    def _digits_vec(self, x: np.ndarray, m: int) -> np.ndarray:
        """Numerals of each ``x`` (``m`` per row), several numerals per division via a table."""
        radix = self.radix
        k = 1
        while radix ** (k + 1) <= 65536 and k < m:
            k += 1
        table = self._digit_table(k)
        out = np.empty((len(x), m), dtype=np.uint32)
        base = np.uint64(radix**k)
        pos = m
        while pos > 0:
            step = min(k, pos)
            if step == k:
                chunk = (x % base).astype(np.int64)
                x = x // base
                out[:, pos - k: pos] = table[chunk]
            else:
                out[:, :pos] = _digits_vec(x, pos, radix)
            pos -= step
        return out

    def _digit_table(self, k: int) -> np.ndarray:
        cached = self._tables.get(k)
        if cached is None:
            vals = np.arange(self.radix**k, dtype=np.uint64)
            cached = self._tables[k] = _digits_vec(vals, k, self.radix)
        return cached

    def crypt_arrow(self, arr: pa.Array, tweak: bytes | None = None, *, encrypt: bool = True,
                    column: str = "<unnamed>") -> pa.Array:
        """Encrypt/decrypt a pyarrow string array over the alphabet (nulls stay null).

        Values are grouped by length; each group goes through :meth:`crypt_matrix`.
        """
        if self.alphabet is None:
            raise InputError("this FF1 works on numerals, not strings")
        arr = pc.cast(arr, pa.large_string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        n = len(arr)
        if n == 0 or arr.null_count == n:
            return arr
        if pc.all(pc.string_is_ascii(arr)).as_py() is False:
            raise InputError(f"column {column!r}: values have characters outside the FF1 "
                             "alphabet")
        lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False)
        valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        lengths = np.where(valid, lengths, -1).astype(np.int64)
        groups = np.unique(lengths[valid])
        if len(groups) == 1 and arr.null_count == 0:
            return self._crypt_group(arr, int(groups[0]), tweak, encrypt, column, np.arange(1))
        parts: list[pa.Array] = []
        order: list[np.ndarray] = []
        for length in groups:
            idx = np.flatnonzero(lengths == length)
            parts.append(self._crypt_group(arr.take(pa.array(idx)), int(length), tweak, encrypt,
                                           column, idx))
            order.append(idx)
        nulls = np.flatnonzero(~valid)
        parts.append(pa.nulls(len(nulls), pa.large_string()))
        order.append(nulls)
        inverse = np.empty(n, dtype=np.int64)
        inverse[np.concatenate(order)] = np.arange(n)
        return pa.concat_arrays(parts).take(pa.array(inverse))

    def _crypt_group(self, sub: pa.Array, length: int, tweak: bytes | None, encrypt: bool,
                     column: str, idx: np.ndarray) -> pa.Array:
        """Equal-length, null-free values: their characters are one contiguous block."""
        self._check_len_column(length, column, int(idx[0]))
        rows = len(sub)
        _, offsets_buf, data_buf = sub.buffers()
        start = int(np.frombuffer(offsets_buf, dtype=np.int64)[sub.offset])
        data = np.frombuffer(data_buf, dtype=np.uint8)[start: start + rows * length]
        nums = self._lut[data].reshape(rows, length)
        if (nums == 255).any():
            bad = int(idx[int(np.flatnonzero((nums == 255).any(axis=1))[0])]) \
                if len(idx) == rows else int(np.flatnonzero((nums == 255).any(axis=1))[0])
            raise InputError(f"column {column!r}: value at position {bad} has characters "
                             "outside the FF1 alphabet")
        res = self.crypt_matrix(nums, tweak, encrypt=encrypt)
        out = self._chars[res].reshape(-1)
        offsets = np.arange(rows + 1, dtype=np.int64) * length
        return pa.Array.from_buffers(pa.large_string(), rows,
                                     [None, pa.py_buffer(offsets), pa.py_buffer(out)])

    def _check_len_column(self, n: int, column: str, position: int) -> None:
        self._check_len(n, what=f"column {column!r}: value at position {position}")


def _num(x: Sequence[int], radix: int) -> int:
    acc = 0
    for d in x:
        acc = acc * radix + d
    return acc


def _digits(x: int, m: int, radix: int) -> list[int]:
    out = [0] * m
    for k in range(m - 1, -1, -1):
        x, out[k] = divmod(x, radix)
    return out


def _num_vec(x: np.ndarray, radix: int) -> np.ndarray:
    acc = np.zeros(len(x), dtype=np.uint64)
    r = np.uint64(radix)
    for k in range(x.shape[1]):
        acc = acc * r + x[:, k].astype(np.uint64)
    return acc


def _digits_vec(x: np.ndarray, m: int, radix: int) -> np.ndarray:
    out = np.empty((len(x), m), dtype=np.uint32)
    r = np.uint64(radix)
    for k in range(m - 1, -1, -1):
        out[:, k] = x % r
        x = x // r
    return out


def _addmod(a: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
    """``(a + y) mod m`` for ``a, y < m <= 2^64`` without overflow."""
    if m <= 2**63:
        c = a + y
        return np.asarray(np.where(c >= np.uint64(m), c - np.uint64(m), c), dtype=np.uint64)
    gap = np.uint64(m - 1) - y + np.uint64(1)  # m - y, in 1..m
    return np.asarray(np.where(a >= gap, a - gap, a + y), dtype=np.uint64)


def _submod(b: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
    """``(b - y) mod m`` for ``b, y < m <= 2^64`` without overflow."""
    return np.asarray(np.where(b >= y, b - y, b + (np.uint64(m - 1) - y + np.uint64(1))),
                      dtype=np.uint64)


def _default_tweak(domain: str, label: str) -> bytes:
    return hashlib.sha256(b"pets/ff1/tweak\x00" + label.encode() + b"\x00"
                          + domain.encode()).digest()[:8]


class FF1Transform(KeyedTransform):
    """Format-preserving encryption of a column with FF1 under a per-domain AES-256 key.

    Every value must consist of alphabet characters and be between the Rev. 1 minimum length
    (``radix^len >= 1,000,000``: 6 digits, 4 alphanumerics) and ``max_len``; the output has the
    same length and alphabet. The tweak defaults to a digest of the domain (pass ``tweak=`` for
    a per-column tweak).

    Warning — what it links: FF1 is a **deterministic** permutation of the value space: equal
    inputs give equal outputs within a domain (rows of a person stay linkable, frequencies are
    preserved) and the length is preserved. Small domains are weak — the Rev. 1 minimum is a
    floor, not a recommendation. Reversible in the key's jurisdiction only (:meth:`reverse`,
    audited).

    Examples:
        >>> import pandas as pd
        >>> from pets import Context
        >>> from pets.keys import Secret
        >>> f = FF1Transform(Secret(bytes(32)), domain="cards", jurisdiction="EU")
        >>> out = f.apply(pd.Series(["4111111111111111", None]))
        >>> len(out[0]), out[0].isdigit(), pd.isna(out[1])
        (16, True, True)
        >>> f.reverse(out, context=Context("EU"))[0]
        '4111111111111111'
    """

    name: ClassVar[str] = "ff1"
    purpose: ClassVar[str] = "ff1"
    key_length: ClassVar[int] = 32
    reversible: ClassVar[bool] = True
    links: ClassVar[str] = (
        "equal inputs within one domain (deterministic permutation; frequencies, length and "
        "alphabet preserved); reversible in the key's jurisdiction")

    def __init__(self, secret: Secret, *, domain: str, alphabet: str = DIGITS,
                 tweak: bytes | None = None, max_len: int = DEFAULT_MAX_LEN,
                 jurisdiction: str | None = None, audit: AuditHook | None = None) -> None:
        self._configure(alphabet=alphabet, tweak=tweak, max_len=max_len)
        super().__init__(secret, domain=domain, jurisdiction=jurisdiction, audit=audit)

    def _configure(self, alphabet: str = DIGITS, tweak: bytes | str | None = None,
                   max_len: int = DEFAULT_MAX_LEN, **kw: Any) -> None:
        super()._configure(**kw)
        if isinstance(tweak, str):  # hex, as config() / describe() record it
            try:
                tweak = bytes.fromhex(tweak)
            except ValueError:
                raise InputError(f"{self.name}: tweak must be bytes or hex digits") from None
        FF1(bytes(32), alphabet, tweak=tweak or b"", max_len=max_len)  # validate early
        self.alphabet = alphabet
        self._tweak = tweak
        self.max_len = max_len

    def _init_key(self, key: Secret, domain: str, origin: Any, audit: AuditHook | None) -> None:
        super()._init_key(key, domain, origin, audit)
        tweak = self._tweak if self._tweak is not None else _default_tweak(domain, self.name)
        self._ff1 = FF1(key.expose(), self.alphabet, tweak=tweak, max_len=self.max_len)

    def params(self) -> dict[str, Any]:
        return {"alphabet": self.alphabet, "radix": len(self.alphabet),
                "tweak": None if self._tweak is None else self._tweak.hex(),
                "max_len": self.max_len}

    def config(self) -> dict[str, Any]:
        return {"alphabet": self.alphabet, "max_len": self.max_len,
                "tweak": None if self._tweak is None else self._tweak.hex()}

    def _strings(self, series: pd.Series) -> pa.Array:
        arr = to_arrow_strings(series)
        if _kind(series) == "int":  # integer dtypes, and Python ints in an object column
            raise InputError(f"column {column_label(series)!r}: FF1 needs strings (leading "
                             "zeros matter); convert integers with zero-padding first")
        return arr

    def apply(self, series: pd.Series) -> pd.Series:
        """Encrypt a column of alphabet strings (nulls stay null)."""
        out = self._ff1.crypt_arrow(self._strings(series), column=column_label(series))
        return series_from_arrow(out, series)

    def reverse(self, series: pd.Series, *, context: Context) -> pd.Series:
        """Decrypt, in the key's jurisdiction only (reported to the audit hook)."""
        self._check_reverse(context, len(series))
        try:
            arr = self._strings(series)
            out = self._ff1.crypt_arrow(arr, column=column_label(series), encrypt=False)
        except InputError:
            self._report_reverse(context, len(series), int(series.isna().sum()), "bad-input")
            raise
        self._report_reverse(context, len(series), int(arr.null_count), "ok")
        return series_from_arrow(out, series)


# E.164 country calling codes are prefix-free: 1 and 7 are one digit, these are two digits,
# every other code is three digits (ITU-T E.164 assigned list).
_CC2 = frozenset({
    20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55,
    56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
})


def e164_country_code_length(digits: np.ndarray) -> np.ndarray:
    """Length (1-3) of the country calling code of each row of leading digits ``(rows, >=2)``.

    Examples:
        >>> import numpy as np
        >>> e164_country_code_length(np.array([[1, 2], [4, 9], [3, 5], [7, 9]]))
        array([1, 2, 3, 1])
    """
    first = digits[:, 0].astype(np.int64)
    two = first * 10 + digits[:, 1]
    out = np.where(np.isin(two, np.array(sorted(_CC2))), 2, 3)
    return np.where((first == 1) | (first == 7), 1, out)


class PhoneFF1(FF1Transform):
    """FF1 on E.164 phone numbers (``+<country code><national number>``), keeping their shape.

    The ``+``, the country calling code and the length are kept; the national number is
    FF1-encrypted over decimal digits with the country code in the tweak (so the same national
    number in two countries encrypts differently). National numbers need at least 6 digits.
    Other characters (spaces, dashes) are refused: normalise to E.164 first.

    Warning — what it links: as :class:`FF1Transform`, plus the country code and number length
    stay visible.

    Examples:
        >>> import pandas as pd
        >>> from pets.keys import Secret
        >>> p = PhoneFF1(Secret(bytes(32)), domain="phones")
        >>> out = p.apply(pd.Series(["+4915112345678", "+33612345678"]))
        >>> [o[:3] for o in out], [len(o) for o in out]
        (['+49', '+33'], [14, 12])
    """

    name: ClassVar[str] = "ff1-phone"
    purpose: ClassVar[str] = "ff1-phone"
    links: ClassVar[str] = (
        "equal numbers within one domain (deterministic); country code and length visible; "
        "reversible in the key's jurisdiction")

    def __init__(self, secret: Secret, *, domain: str, tweak: bytes | None = None,
                 jurisdiction: str | None = None, audit: AuditHook | None = None) -> None:
        super().__init__(secret, domain=domain, alphabet=DIGITS, tweak=tweak, max_len=15,
                         jurisdiction=jurisdiction, audit=audit)

    def _configure(self, alphabet: str = DIGITS, tweak: bytes | str | None = None,
                   max_len: int = 15, **kw: Any) -> None:
        super()._configure(alphabet=DIGITS, tweak=tweak, max_len=15, **kw)
        # the per-country tweak is tweak || 0x00 || country code (up to 3 digits)
        if self._tweak is not None and len(self._tweak) > MAX_TWEAK - 4:
            raise InputError(f"PhoneFF1 tweak must be at most {MAX_TWEAK - 4} bytes")

    def params(self) -> dict[str, Any]:
        return {"format": "E.164", "tweak": None if self._tweak is None else self._tweak.hex()}

    def config(self) -> dict[str, Any]:
        return {"tweak": None if self._tweak is None else self._tweak.hex()}

    def _phone(self, series: pd.Series, *, encrypt: bool) -> tuple[pd.Series, int]:
        label = column_label(series)
        arr = self._strings(series)
        n = len(arr)
        values = np.array(arr.to_numpy(zero_copy_only=False), dtype=object)
        valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        out = values.copy()
        if valid.any():
            # Checked on the Arrow strings first: a fixed-width numpy copy of a hostile 10 MB
            # value would take 40 MB per row. ASCII digits only (str.isdigit accepts "٤", "²").
            ok = np.asarray(pc.match_substring_regex(
                arr.filter(pa.array(valid)), r"^\+[0-9]{8,15}$").to_numpy(zero_copy_only=False),
                dtype=bool)
            if not ok.all():
                bad = int(np.flatnonzero(valid)[int(np.flatnonzero(~ok)[0])])
                raise InputError(f"column {label!r}: value at position {bad} is not an E.164 "
                                 "number (+ then 8-15 digits)")
            present = values[valid].astype(str)
            body = np.char.lstrip(present, "+")
            lead = np.array([[ord(s[0]) - 48, ord(s[1]) - 48] for s in body], dtype=np.int64) \
                if len(body) else np.zeros((0, 2), np.int64)
            ccl = e164_country_code_length(lead)
            cc = np.array([s[:k] for s, k in zip(body, ccl, strict=True)], dtype=object)
            nsn = np.array([s[k:] for s, k in zip(body, ccl, strict=True)], dtype=object)
            res = np.empty(len(body), dtype=object)
            base = self._ff1.tweak
            for code in np.unique(cc):
                sel = cc == code
                part = pa.array(nsn[sel], type=pa.large_string())
                if (np.char.str_len(nsn[sel].astype(str)) < 6).any():
                    bad = int(np.flatnonzero(valid)[int(np.flatnonzero(sel)[0])])
                    raise InputError(f"column {label!r}: value at position {bad} has a national "
                                     "number shorter than 6 digits (FF1 minimum)")
                enc = self._ff1.crypt_arrow(part, base + b"\x00" + code.encode(),
                                            encrypt=encrypt, column=label)
                res[sel] = np.char.add("+" + code, np.asarray(enc.to_pylist(), dtype=str))
            out[valid] = res
        result = pa.array(out, type=pa.large_string(), from_pandas=True) if n else \
            pa.array([], type=pa.large_string())
        return series_from_arrow(result, series), int(arr.null_count)

    def apply(self, series: pd.Series) -> pd.Series:
        """Encrypt E.164 numbers, keeping ``+``, country code and length (nulls stay null)."""
        return self._phone(series, encrypt=True)[0]

    def reverse(self, series: pd.Series, *, context: Context) -> pd.Series:
        """Decrypt, in the key's jurisdiction only (reported to the audit hook)."""
        self._check_reverse(context, len(series))
        try:
            out, nulls = self._phone(series, encrypt=False)
        except InputError:
            self._report_reverse(context, len(series), int(series.isna().sum()), "bad-input")
            raise
        self._report_reverse(context, len(series), nulls, "ok")
        return out
