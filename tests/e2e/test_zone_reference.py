"""The heart-rate job against an independent reference on the real recordings, through
the real path: `sluice replay` → WebSocket → log → job → lake and /v1/sessions."""

import reference
from conftest import DATA, lake_rows

FILES = [
    "20210119_run_garmin_fenix6.tcx",
    "20210308_virtual_ride_with_power.tcx",
    "20210323_yoga.tcx",
    "sample_mulitple_header.fit",
    "hrv-activity.fit",
    "garmin-fenix-5-bike.fit",
]


def test_reference_on_a_hand_computed_case():
    # 100/130/160 bpm at HRmax 190 are low, moderate, high. The 160 bpm reading is followed
    # by a 60 s hole: it covers only 5 s. The reading after the hole is the session's last
    # (1 s), since the next one comes 301 s later and starts a new session.
    got = reference.sessions([(0, 100), (1000, 130), (2000, 160), (62000, 100), (363000, 100)])
    assert got == [
        {"start": 0, "end": 63000, "samples": 4, "low_ms": 2000, "moderate_ms": 1000, "high_ms": 5000},
        {"start": 363000, "end": 364000, "samples": 1, "low_ms": 1000, "moderate_ms": 0, "high_ms": 0},
    ]


def test_sessions_match_the_reference_on_every_real_recording(sluice):
    paths = [DATA / f for f in FILES]
    r = sluice.run_cli("replay", "--speed", "0", "--server", sluice.url, *map(str, paths))
    assert r.returncode == 0, r.stderr
    assert "0 rejected" in r.stdout
    sluice.drain()
    lake = lake_rows(sluice.data_dir, "heart_rate")
    for path in paths:
        player = path.stem
        want = reference.sessions(reference.read(path))
        got = reference.api_sessions_as_ms(sluice.sessions(player)["closed"])
        assert got == want, player
        in_lake = sorted(
            ({"start": reference._ms(s["session_start"]), "end": reference._ms(s["session_end"]), "samples": s["samples"],
              "low_ms": round(s["low_s"] * 1000), "moderate_ms": round(s["moderate_s"] * 1000), "high_ms": round(s["high_s"] * 1000)}
             for s in lake if s["player_id"] == player),
            key=lambda s: s["start"],
        )
        assert in_lake == want, player
    # The chained FIT file has a long gap: two sessions, as the reference says.
    assert len(sluice.sessions("sample_mulitple_header")["closed"]) == 2
