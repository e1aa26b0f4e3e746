//! Recording readers. Each returns the file's heart-rate samples sorted by time, one per
//! timestamp (a later duplicate timestamp in the file is dropped).

use std::io::BufReader;
use std::path::Path;

use chrono::{DateTime, Utc};
use fitparser::profile::MesgNum;
use fitparser::Value;

use crate::ReplayError;

/// One heart-rate sample of a recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Epoch ms, UTC.
    pub time_ms: i64,
    /// bpm
    pub heartbeat_bpm: f64,
}

/// Reads a recording from disk; the format is chosen by extension (`.fit`, `.tcx`, `.gpx`).
pub fn read_file(path: &Path) -> Result<Vec<Reading>, ReplayError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ReplayError::Io { path: name.clone(), source })?;
    read_bytes(&name, &bytes)
}

/// Reads a recording held in memory; `name` picks the format by extension.
pub fn read_bytes(name: &str, bytes: &[u8]) -> Result<Vec<Reading>, ReplayError> {
    let ext = Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let mut readings = match ext.as_str() {
        "fit" => read_fit(name, bytes)?,
        "tcx" => read_tcx(name, bytes)?,
        "gpx" => read_gpx(name, bytes)?,
        _ => return Err(ReplayError::UnknownFormat { path: name.into() }),
    };
    readings.sort_by_key(|r| r.time_ms);
    readings.dedup_by_key(|r| r.time_ms);
    if readings.is_empty() {
        return Err(ReplayError::NoHeartRate { path: name.into() });
    }
    Ok(readings)
}

fn parse_err<'a>(name: &'a str, format: &'static str) -> impl Fn(String) -> ReplayError + 'a {
    move |reason| ReplayError::Parse { path: name.into(), format, reason }
}

/// FIT: `record` messages with both `timestamp` and `heart_rate` (Garmin FIT SDK profile).
fn read_fit(name: &str, bytes: &[u8]) -> Result<Vec<Reading>, ReplayError> {
    let records = fitparser::from_bytes(bytes).map_err(|e| parse_err(name, "FIT")(e.to_string()))?;
    let mut out = Vec::new();
    for rec in records.iter().filter(|r| r.kind() == MesgNum::Record) {
        let (mut time, mut hr) = (None, None);
        for f in rec.fields() {
            match (f.name(), f.value()) {
                ("timestamp", Value::Timestamp(t)) => time = Some(t.timestamp_millis()),
                ("heart_rate", v) => hr = fit_number(v),
                _ => {}
            }
        }
        if let (Some(time_ms), Some(heartbeat_bpm)) = (time, hr) {
            out.push(Reading { time_ms, heartbeat_bpm });
        }
    }
    Ok(out)
}

fn fit_number(v: &Value) -> Option<f64> {
    match v {
        Value::UInt8(n) => Some(*n as f64),
        Value::UInt16(n) => Some(*n as f64),
        Value::UInt32(n) => Some(*n as f64),
        Value::Float32(n) => Some(*n as f64),
        Value::Float64(n) => Some(*n),
        _ => None,
    }
}

/// TCX: every `Trackpoint` with a `HeartRateBpm` (Garmin Training Center Database v2).
fn read_tcx(name: &str, bytes: &[u8]) -> Result<Vec<Reading>, ReplayError> {
    let mut reader = BufReader::new(bytes);
    let db = tcx::read(&mut reader).map_err(|e| parse_err(name, "TCX")(e.to_string()))?;
    let mut out = Vec::new();
    for activity in db.activities.iter().flat_map(|a| &a.activities) {
        for lap in &activity.laps {
            for track in &lap.tracks {
                for tp in &track.trackpoints {
                    if let Some(hr) = &tp.heart_rate {
                        out.push(Reading { time_ms: tp.time.timestamp_millis(), heartbeat_bpm: hr.value });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// GPX: track points (`trk/trkseg/trkpt`) with a time, and heart rate from Garmin's
/// TrackPointExtension (`<extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>`). The gpx
/// crate reads the points and times; heart rate is read in a second pass over the XML,
/// matched to points by position.
fn read_gpx(name: &str, bytes: &[u8]) -> Result<Vec<Reading>, ReplayError> {
    let doc = gpx::read(BufReader::new(bytes)).map_err(|e| parse_err(name, "GPX")(e.to_string()))?;
    let times: Vec<Option<i64>> = doc
        .tracks
        .iter()
        .flat_map(|t| &t.segments)
        .flat_map(|s| &s.points)
        .map(|p| {
            p.time
                .and_then(|t| t.format().ok())
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc).timestamp_millis())
        })
        .collect();
    let hrs = gpx_heart_rates(bytes).map_err(parse_err(name, "GPX"))?;
    if hrs.len() != times.len() {
        return Err(parse_err(name, "GPX")(format!("{} track points but {} trkpt elements", times.len(), hrs.len())));
    }
    Ok(times
        .into_iter()
        .zip(hrs)
        .filter_map(|(t, hr)| Some(Reading { time_ms: t?, heartbeat_bpm: hr? }))
        .collect())
}

/// The `hr` extension value of every `trkpt`, in document order.
fn gpx_heart_rates(bytes: &[u8]) -> Result<Vec<Option<f64>>, String> {
    use xml::reader::{EventReader, XmlEvent};
    let mut out: Vec<Option<f64>> = Vec::new();
    let (mut in_trkpt, mut in_hr) = (false, false);
    for event in EventReader::new(bytes) {
        match event.map_err(|e| e.to_string())? {
            XmlEvent::StartElement { name, .. } if name.local_name == "trkpt" => {
                in_trkpt = true;
                out.push(None);
            }
            XmlEvent::EndElement { name } if name.local_name == "trkpt" => in_trkpt = false,
            XmlEvent::StartElement { name, .. } if in_trkpt && name.local_name == "hr" => in_hr = true,
            XmlEvent::EndElement { name } if name.local_name == "hr" => in_hr = false,
            XmlEvent::Characters(text) if in_hr => {
                if let Some(last) = out.last_mut() {
                    *last = text.trim().parse::<f64>().ok();
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPX: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1"
     xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1">
  <trk><trkseg>
    <trkpt lat="50.1" lon="8.6"><time>2016-08-25T20:44:18Z</time>
      <extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>152</gpxtpx:hr></gpxtpx:TrackPointExtension></extensions></trkpt>
    <trkpt lat="50.1" lon="8.6"><time>2016-08-25T20:44:19Z</time></trkpt>
    <trkpt lat="50.1" lon="8.6"><time>2016-08-25T20:44:20Z</time>
      <extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>154</gpxtpx:hr></gpxtpx:TrackPointExtension></extensions></trkpt>
  </trkseg></trk>
</gpx>"#;

    #[test]
    fn gpx_heart_rate_from_garmin_extension() {
        let r = read_bytes("x.gpx", GPX.as_bytes()).unwrap();
        assert_eq!(r.len(), 2, "the point without hr is skipped");
        assert_eq!(r[0].heartbeat_bpm, 152.0);
        assert_eq!(r[1].time_ms - r[0].time_ms, 2_000);
    }

    #[test]
    fn unknown_and_empty() {
        assert!(matches!(read_bytes("x.csv", b""), Err(ReplayError::UnknownFormat { .. })));
        assert!(matches!(read_bytes("x.gpx", b"<gpx version=\"1.1\"></gpx>"), Err(ReplayError::NoHeartRate { .. }) | Err(ReplayError::Parse { .. })));
    }
}
