//! Times `render_png` on the graph `scripts/bench-web` asks for most (one day of one
//! host's load at 600×240, one point per plot pixel), without HTTP or storage, so the
//! drawing and encoding cost can be measured and profiled on its own:
//!
//! ```sh
//! cargo run --release -p ganglion-web --example render_graph [ITERATIONS] [OUT.png]
//! ```

use std::time::Instant;

use ganglion_web::graph::{render_png, GraphSpec, Line};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let out = args.next();
    let end = 1_764_000_000;
    let start = end - 86_400;
    // 530 points as charts::build consolidates a day of 15 s rows for a 600 px graph.
    let points: Vec<(i64, Option<f64>)> = (0..530)
        .map(|i| {
            let t = start + (i + 1) * 163;
            let x = i as f64;
            (t, Some(1.5 + (x / 40.0).sin() + 0.3 * ((x * 7.3).sin() * (x * 1.7).cos())))
        })
        .collect();
    let spec = GraphSpec {
        title: "load_one on bench-007".into(),
        width: 600,
        height: 240,
        start,
        end,
        lines: vec![Line::new("load_one", "", points)],
        ..GraphSpec::default()
    };
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let png = render_png(&spec).expect("the spec is valid");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = png.len();
        if let Some(path) = &out {
            std::fs::write(path, &png).expect("the output path is writable");
        }
    }
    times.sort_by(f64::total_cmp);
    println!("{n} renders, {bytes} bytes: p50 {:.3} ms, p99 {:.3} ms", times[n / 2], times[n * 99 / 100]);
}
