"""Seeded synthetic EU user data for the demo, tests, notebooks and benchmarks.

Everything is generated with vectorised numpy from one seed: the same arguments give the same
rows (and byte-equal Parquet files). The data are invented; any resemblance to a person is chance.

Examples:
    >>> from pets.datasets import synthetic_users, synthetic_events
    >>> users = synthetic_users(1000, seed=7)
    >>> list(users.columns)
    ['user_id', 'email', 'phone', 'birth_date', 'postcode', 'country', 'ip', 'signup_ts']
    >>> users.equals(synthetic_users(1000, seed=7))
    True
    >>> events = synthetic_events(5000, n_users=1000, seed=7)
    >>> list(events.columns)
    ['user_id', 'country', 'ts', 'event', 'watch_seconds']
    >>> set(events["user_id"]) <= set(users["user_id"])
    True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pets._errors import InputError

__all__ = ["COUNTRIES", "synthetic_events", "synthetic_users"]

#: EU member states: (ISO code, population in millions, E.164 calling code, national number
#: length, postcode digits). Populations are the sampling weights.
COUNTRIES: tuple[tuple[str, float, str, int, int], ...] = (
    ("DE", 84.4, "49", 11, 5), ("FR", 68.2, "33", 9, 5), ("IT", 58.9, "39", 10, 5),
    ("ES", 48.1, "34", 9, 5), ("PL", 36.8, "48", 9, 5), ("RO", 19.1, "40", 9, 6),
    ("NL", 17.9, "31", 9, 4), ("BE", 11.8, "32", 9, 4), ("CZ", 10.9, "420", 9, 5),
    ("SE", 10.5, "46", 9, 5), ("PT", 10.4, "351", 9, 7), ("GR", 10.4, "30", 10, 5),
    ("HU", 9.6, "36", 9, 4), ("AT", 9.1, "43", 10, 4), ("BG", 6.4, "359", 9, 4),
    ("DK", 5.9, "45", 8, 4), ("FI", 5.6, "358", 9, 5), ("SK", 5.4, "421", 9, 5),
    ("IE", 5.3, "353", 9, 7), ("HR", 3.9, "385", 9, 5), ("LT", 2.9, "370", 8, 5),
    ("SI", 2.1, "386", 8, 4), ("LV", 1.9, "371", 8, 4), ("EE", 1.4, "372", 8, 5),
    ("CY", 0.9, "357", 8, 4), ("LU", 0.7, "352", 9, 4), ("MT", 0.5, "356", 8, 4),
)

_FIRST = np.array([
    "anna", "lukas", "marie", "jan", "sofia", "luca", "emma", "mateo", "julia", "noah",
    "elena", "leon", "zofia", "hugo", "ines", "finn", "alba", "oskar", "chloe", "milan",
    "lea", "tomas", "ana", "piotr", "sara", "matteo", "eva", "liam", "nora", "jonas",
])
_LAST = np.array([
    "muller", "martin", "rossi", "garcia", "nowak", "popescu", "dejong", "peeters", "novak",
    "andersson", "silva", "papadopoulos", "nagy", "gruber", "ivanov", "jensen", "virtanen",
    "horvat", "murphy", "kazlauskas", "schmidt", "bernard", "russo", "lopez", "kowalski",
    "dubois", "bianchi", "fernandez", "wisniewski", "schneider",
])
_DOMAINS = np.array(["mail.eu", "post.de", "web.fr", "correo.es", "posta.it", "poczta.pl",
                     "example.nl", "inbox.eu"])
_EVENTS = np.array(["play", "pause", "search", "like", "share", "purchase"])
_EVENT_P = np.array([0.55, 0.2, 0.13, 0.07, 0.03, 0.02])
_EPOCH_2018 = np.datetime64("2018-01-01T00:00:00", "s")
_EPOCH_2026 = np.datetime64("2026-01-01T00:00:00", "s")


def _digits(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """``n`` strings of ``width`` random decimal digits (vectorised)."""
    d = rng.integers(0, 10, size=(n, width), dtype=np.uint8) + ord("0")
    return d.view(f"S{width}").ravel().astype(str)


def _country_sample(rng: np.random.Generator, n: int) -> np.ndarray:
    w = np.array([c[1] for c in COUNTRIES])
    return rng.choice(len(COUNTRIES), size=n, p=w / w.sum())


def _user_ids(n: int) -> np.ndarray:
    return np.char.add("u", np.char.zfill(np.arange(n).astype(str), 8))


def synthetic_users(n: int = 10_000, *, seed: int = 0) -> pd.DataFrame:
    """Synthetic EU users, one row each.

    Columns: ``user_id`` (``u00000000``…), ``email``, ``phone`` (E.164 with the country's
    calling code), ``birth_date`` (1940–2008), ``postcode`` (the country's digit count),
    ``country`` (ISO code, population-weighted), ``ip`` (IPv4), ``signup_ts`` (UTC, 2018–2025).

    Args:
        n: Number of users (0 or more).
        seed: Seed for numpy's PCG64 generator; the same seed gives the same rows.
    """
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    if n == 0:
        return synthetic_users(1, seed=seed).iloc[:0]
    rng = np.random.default_rng(seed)
    cidx = _country_sample(rng, n)
    codes = np.array([c[0] for c in COUNTRIES])
    country = codes[cidx]

    first = _FIRST[rng.integers(0, len(_FIRST), n)]
    last = _LAST[rng.integers(0, len(_LAST), n)]
    num = rng.integers(1, 1000, n).astype(str)
    domain = _DOMAINS[rng.integers(0, len(_DOMAINS), n)]
    email = np.char.add(np.char.add(np.char.add(np.char.add(first, "."), last), num),
                        np.char.add("@", domain))

    phone = np.empty(n, dtype=object)
    postcode = np.empty(n, dtype=object)
    for i, (_, _, cc, nlen, plen) in enumerate(COUNTRIES):
        mask = cidx == i
        k = int(mask.sum())
        if k:
            phone[mask] = np.char.add("+" + cc, _digits(rng, k, nlen))
            postcode[mask] = _digits(rng, k, plen)

    birth = np.datetime64("1940-01-01") + rng.integers(0, 68 * 365, n).astype("timedelta64[D]")
    octets = rng.integers(1, 255, size=(n, 4)).astype(str)
    ip = np.char.add(np.char.add(np.char.add(np.char.add(octets[:, 0], "."), octets[:, 1]),
                                 np.char.add(".", octets[:, 2])), np.char.add(".", octets[:, 3]))
    span = int((_EPOCH_2026 - _EPOCH_2018).astype(np.int64))
    signup = _EPOCH_2018 + rng.integers(0, span, n).astype("timedelta64[s]")

    return pd.DataFrame({
        "user_id": pd.array(_user_ids(n), dtype="string"),
        "email": pd.array(email, dtype="string"),
        "phone": pd.array(phone.astype(str), dtype="string"),
        "birth_date": pd.to_datetime(birth).astype("datetime64[s]"),
        "postcode": pd.array(postcode.astype(str), dtype="string"),
        "country": pd.array(country, dtype="string"),
        "ip": pd.array(ip, dtype="string"),
        "signup_ts": pd.to_datetime(signup).tz_localize("UTC").astype("datetime64[s, UTC]"),
    })


def synthetic_events(
    n_events: int = 100_000, *, n_users: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Synthetic viewing events for the users of :func:`synthetic_users` with the same seed.

    Users contribute very different numbers of rows (log-normal activity), so contribution
    bounding matters. ``watch_seconds`` is heavy-tailed (log-normal, capped at 6 hours) and 0 for
    events other than ``play``. ``country`` is the user's country, repeated for convenience.

    Columns: ``user_id``, ``country``, ``ts`` (UTC, 2026), ``event``, ``watch_seconds`` (float).

    Args:
        n_events: Number of rows.
        n_users: Number of users to draw from (ids ``u00000000``…); must be >= 1 when
            ``n_events`` > 0.
        seed: The same seed as :func:`synthetic_users` gives matching countries.
    """
    if n_events < 0 or n_users < 0 or (n_events > 0 and n_users == 0):
        raise InputError(f"need n_events >= 0 and n_users >= 1, got {n_events}, {n_users}")
    if n_events == 0:
        return synthetic_events(1, n_users=max(n_users, 1), seed=seed).iloc[:0]
    users_rng = np.random.default_rng(seed)
    country_of_user = np.array([c[0] for c in COUNTRIES])[_country_sample(users_rng, n_users)]
    rng = np.random.default_rng([seed, 1])
    activity = rng.lognormal(mean=0.0, sigma=1.2, size=n_users)
    uidx = rng.choice(n_users, size=n_events, p=activity / activity.sum())
    ev = _EVENTS[rng.choice(len(_EVENTS), size=n_events, p=_EVENT_P)]
    watch = np.minimum(rng.lognormal(mean=6.0, sigma=1.1, size=n_events), 6 * 3600.0)
    watch = np.where(ev == "play", np.round(watch, 1), 0.0)
    year = 365 * 24 * 3600
    ts = np.datetime64("2026-01-01T00:00:00", "s") + rng.integers(0, year, n_events).astype(
        "timedelta64[s]")
    order = np.argsort(ts, kind="stable")
    uidx, ev, watch, ts = uidx[order], ev[order], watch[order], ts[order]
    return pd.DataFrame({
        "user_id": pd.array(_user_ids(n_users)[uidx], dtype="string"),
        "country": pd.array(country_of_user[uidx], dtype="string"),
        "ts": pd.to_datetime(ts).tz_localize("UTC").astype("datetime64[s, UTC]"),
        "event": pd.array(ev, dtype="string"),
        "watch_seconds": watch.astype(np.float64),
    })
