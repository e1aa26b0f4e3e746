"""An independent reference for the heart-rate intensity rule, written from the issue's
text, sharing no code with sluice: its own file readers (ElementTree for TCX, fitdecode
for FIT) and its own session and zone computation.

Rule: zones by f = bpm / HRmax (HRmax 190 unless given): low f < 0.64, moderate
0.64 <= f < 0.77, high f >= 0.77. A reading at t covers min(t_next - t, 5 s); the last
reading of a session covers 1 s. More than 300 s between readings ends a session. A
resent reading (same time) counts once.
"""
import datetime as dt
import xml.etree.ElementTree as ET

import fitdecode

TCX_NS = {"t": "http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"}


def _ms(d):
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return int(round(d.timestamp() * 1000))


def read_tcx(path):
    out = []
    for tp in ET.parse(path).getroot().iterfind(".//t:Trackpoint", TCX_NS):
        time = tp.find("t:Time", TCX_NS)
        hr = tp.find("t:HeartRateBpm/t:Value", TCX_NS)
        if time is not None and hr is not None:
            out.append((_ms(dt.datetime.fromisoformat(time.text.strip())), float(hr.text)))
    return out


def read_fit(path):
    out = []
    with fitdecode.FitReader(str(path)) as fit:
        for frame in fit:
            if isinstance(frame, fitdecode.FitDataMessage) and frame.name == "record":
                if frame.has_field("timestamp") and frame.has_field("heart_rate"):
                    t, hr = frame.get_value("timestamp"), frame.get_value("heart_rate")
                    if t is not None and hr is not None:
                        out.append((_ms(t), float(hr)))
    return out


def read(path):
    return read_fit(path) if str(path).endswith(".fit") else read_tcx(path)


def zone(bpm, hr_max):
    f = bpm / hr_max
    return "low" if f < 0.64 else ("moderate" if f < 0.77 else "high")


def sessions(readings, hr_max=190.0, gap_ms=300_000):
    """Sessions of one player's readings: dicts with start/end ms, zone ms and samples."""
    first = {}
    for t, bpm in readings:
        first.setdefault(t, bpm)  # a resent reading counts once: the first one
    points = sorted(first.items())
    groups, cur = [], [points[0]]
    for p in points[1:]:
        if p[0] - cur[-1][0] > gap_ms:
            groups.append(cur)
            cur = [p]
        else:
            cur.append(p)
    groups.append(cur)
    out = []
    for g in groups:
        z = {"low": 0, "moderate": 0, "high": 0}
        for i, (t, bpm) in enumerate(g):
            cover = min(g[i + 1][0] - t, 5000) if i + 1 < len(g) else 1000
            z[zone(bpm, hr_max)] += cover
        out.append({"start": g[0][0], "end": g[-1][0] + 1000, "samples": len(g),
                    "low_ms": z["low"], "moderate_ms": z["moderate"], "high_ms": z["high"]})
    return out


def iso_ms(s):
    return _ms(dt.datetime.fromisoformat(s.replace("Z", "+00:00")))


def api_sessions_as_ms(api_sessions):
    """/v1/sessions entries in the reference's shape, sorted by start."""
    out = [{"start": iso_ms(s["session_start"]), "end": iso_ms(s["session_end"]), "samples": s["samples"],
            "low_ms": round(s["low_s"] * 1000), "moderate_ms": round(s["moderate_s"] * 1000),
            "high_ms": round(s["high_s"] * 1000)} for s in api_sessions]
    return sorted(out, key=lambda s: s["start"])


def event(player, t_ms, bpm):
    """The seed's JSON record: createdAt as [y, m, d, h, min, s, nanos] (UTC)."""
    d = dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.timezone.utc)
    return {"playerId": player, "heartbeat": bpm,
            "createdAt": [d.year, d.month, d.day, d.hour, d.minute, d.second, (t_ms % 1000) * 1_000_000]}
