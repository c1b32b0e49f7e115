//! ffmpeg's `-progress pipe:1` stream: `key=value` lines grouped into blocks, each closed by
//! `progress=continue` or `progress=end`. A pure parser, fed one line at a time.

/// One progress block. Fields ffmpeg reported as `N/A` (or not at all) are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Output time in microseconds (may be slightly negative at the very start).
    pub out_time_us: Option<i64>,
    pub frame: Option<u64>,
    pub fps: Option<f64>,
    /// Encoding speed as a multiple of real time (`speed=2.5x` → 2.5).
    pub speed: Option<f64>,
    /// True for the final block (`progress=end`).
    pub end: bool,
}

/// Accumulates lines until a block closes.
#[derive(Debug, Default)]
pub struct ProgressParser {
    current: Progress,
    /// `out_time_us` seen in this block; it wins over `out_time_ms`/`out_time`.
    have_us: bool,
}

impl ProgressParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one stdout line; returns the block when a `progress=` line closes it.
    pub fn push_line(&mut self, line: &str) -> Option<Progress> {
        let (key, value) = line.trim().split_once('=')?;
        let value = value.trim();
        let na = value.is_empty() || value == "N/A";
        match key.trim() {
            "out_time_us" => {
                self.have_us = true;
                self.current.out_time_us = if na { None } else { value.parse().ok() };
            }
            // Despite its name, ffmpeg reports out_time_ms in microseconds as well.
            "out_time_ms" if !self.have_us => {
                self.current.out_time_us = if na { None } else { value.parse().ok() };
            }
            "out_time" if !self.have_us && self.current.out_time_us.is_none() && !na => {
                self.current.out_time_us = parse_clock_us(value);
            }
            "frame" => self.current.frame = if na { None } else { value.parse().ok() },
            "fps" => self.current.fps = if na { None } else { value.parse().ok() },
            "speed" => {
                self.current.speed = if na {
                    None
                } else {
                    value.trim_end_matches('x').trim().parse().ok()
                }
            }
            "progress" => {
                let mut block = std::mem::take(&mut self.current);
                self.have_us = false;
                block.end = value == "end";
                return Some(block);
            }
            _ => {}
        }
        None
    }
}

/// `00:00:01.500000` (possibly negative) → 1_500_000.
fn parse_clock_us(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut secs = 0.0;
    for part in s.split(':') {
        secs = secs * 60.0 + part.parse::<f64>().ok()?;
    }
    let us = (secs * 1e6).round() as i64;
    Some(if neg { -us } else { us })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real capture: ffmpeg 9, bigbuckbunny.mp4 → 480p x264 + aac mp4.
    const CAPTURE: &str = include_str!("../tests/fixtures/progress_x264.txt");

    #[test]
    fn parses_a_real_capture() {
        let mut parser = ProgressParser::new();
        let blocks: Vec<Progress> = CAPTURE
            .lines()
            .filter_map(|l| parser.push_line(l))
            .collect();
        assert_eq!(blocks.len(), 8);
        assert_eq!(
            blocks[0],
            Progress {
                out_time_us: Some(2_346_667),
                frame: Some(0),
                fps: Some(0.0),
                speed: Some(4.69),
                end: false
            }
        );
        assert_eq!(blocks[1].frame, Some(15));
        // Blocks where ffmpeg had no output time: N/A everywhere.
        assert_eq!(blocks[5].out_time_us, None);
        assert_eq!(blocks[5].speed, None);
        assert_eq!(blocks[5].frame, Some(84));
        let last = blocks.last().unwrap();
        assert!(last.end);
        assert_eq!(last.out_time_us, Some(5_312_000));
        assert_eq!(last.frame, Some(132));
        assert_eq!(last.speed, Some(1.41));
        assert!(blocks[..7].iter().all(|b| !b.end));
    }

    #[test]
    fn out_time_ms_is_microseconds_and_out_time_is_a_fallback() {
        let mut p = ProgressParser::new();
        assert_eq!(p.push_line("out_time_ms=1500000"), None);
        assert_eq!(
            p.push_line("progress=continue").unwrap().out_time_us,
            Some(1_500_000)
        );
        p.push_line("out_time=00:01:02.250000");
        assert_eq!(
            p.push_line("progress=end").unwrap().out_time_us,
            Some(62_250_000)
        );
        p.push_line("out_time_us=-23220");
        p.push_line("out_time_ms=999");
        assert_eq!(
            p.push_line("progress=continue").unwrap().out_time_us,
            Some(-23_220)
        );
        p.push_line("garbage line");
        p.push_line("speed=N/A");
        assert_eq!(
            p.push_line("progress=continue").unwrap(),
            Progress::default()
        );
    }
}
