//! The figures of the report, drawn with plotters into an RGB buffer and written as PNG with
//! the `png` crate. Text uses the bundled DejaVu Sans, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// The ten colours of matplotlib's tab10, one per digit.
pub const DIGIT_COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the bundled font assets/fonts/DejaVuSans.ttf does not parse");
        }
    });
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws into a white `width x height` canvas and writes it to `path` as PNG.
fn render(path: &Path, width: u32, height: u32, draw: impl FnOnce(&Area<'_>) -> anyhow::Result<()>) -> anyhow::Result<()> {
    register_font();
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root).map_err(|e| e.context(format!("drawing {}", path.display())))?;
        root.present().map_err(plot_err)?;
    }
    // Encoded in memory, then written in one call: a full disk is an error that names the
    // file (a buffered writer would lose it in a drop).
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&buf)?;
    }
    std::fs::write(path, png_bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The series legend, in one style for every figure.
fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}

/// One model's training curve: per-step losses (faint), their moving average, and the test
/// loss after each epoch.
pub struct LossCurve<'a> {
    pub name: &'a str,
    pub step_loss: &'a [f32],
    pub steps_per_epoch: usize,
    /// The test loss after epoch 1, 2, ... (empty when not recorded).
    pub test_loss: Vec<f64>,
}

/// `0.0213`, `0.1`, `0.015`: three significant digits, no trailing zeros (log-axis labels that
/// stay distinct).
fn significant(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Training loss per step (log scale) for each model, with a centred moving average, and the
/// test loss after each epoch.
pub fn loss_curves(path: &Path, curves: &[LossCurve<'_>]) -> anyhow::Result<()> {
    render(path, 1000, 600, |root| {
        let epochs = curves.iter().map(|c| c.step_loss.len() as f64 / c.steps_per_epoch.max(1) as f64).fold(0.0, f64::max).max(1e-9);
        let steps = curves.iter().flat_map(|c| c.step_loss.iter().map(|&v| v as f64));
        let all = steps.chain(curves.iter().flat_map(|c| c.test_loss.iter().copied())).filter(|v| *v > 0.0);
        let (lo, hi) = all.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo > hi { (1e-3, 1.0) } else { (lo * 0.9, hi * 1.1) };
        let mut chart = ChartBuilder::on(root)
            .caption("Loss (MSE, log scale): training per step, test after each epoch", (FAMILY, 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..epochs, (lo..hi).log_scale())
            .map_err(plot_err)?;
        // Whole epochs only on the x axis; no light grid lines (they crowd a log axis).
        let whole = epochs.ceil() as usize;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .x_labels((whole + 1).min(21))
            .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-6 { format!("{}", x.round() as i64) } else { String::new() })
            .y_label_formatter(&|y| significant(*y))
            .max_light_lines(0)
            .label_style((FAMILY, 16))
            .draw()
            .map_err(plot_err)?;
        let x = |c: &LossCurve<'_>, step: usize| (step + 1) as f64 / c.steps_per_epoch.max(1) as f64;
        // Every raw curve first, faint; then the smoothed lines and test points on top.
        for (i, c) in curves.iter().enumerate() {
            let colour = DIGIT_COLOURS[i % DIGIT_COLOURS.len()];
            chart
                .draw_series(LineSeries::new(c.step_loss.iter().enumerate().map(|(s, &l)| (x(c, s), l as f64)), colour.mix(0.18)))
                .map_err(plot_err)?;
        }
        for (i, c) in curves.iter().enumerate() {
            let colour = DIGIT_COLOURS[i % DIGIT_COLOURS.len()];
            let dark = RGBColor((colour.0 as f64 * 0.6) as u8, (colour.1 as f64 * 0.6) as u8, (colour.2 as f64 * 0.6) as u8);
            let window = (c.steps_per_epoch / 4).clamp(1, 500);
            let smooth = moving_average(c.step_loss, window);
            chart
                .draw_series(LineSeries::new(smooth.into_iter().enumerate().map(|(s, l)| (x(c, s), l)), dark.stroke_width(3)))
                .map_err(plot_err)?
                .label(format!("{}: training, centred average of {window} steps", c.name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 25, y)], dark.stroke_width(3)));
            if !c.test_loss.is_empty() {
                let points: Vec<(f64, f64)> = c.test_loss.iter().enumerate().map(|(e, &l)| ((e + 1) as f64, l)).collect();
                chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(1))).map_err(plot_err)?;
                chart
                    .draw_series(points.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
                    .map_err(plot_err)?
                    .label(format!("{}: test, after each epoch", c.name))
                    .legend(move |(x, y)| Circle::new((x + 12, y), 4, colour.filled()));
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// The mean of each value's window, centred on it (`window / 2` either side, fewer at the ends).
fn moving_average(values: &[f32], window: usize) -> Vec<f64> {
    let half = window / 2;
    let mut prefix = Vec::with_capacity(values.len() + 1);
    prefix.push(0f64);
    for &v in values {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + v as f64);
    }
    (0..values.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(values.len()));
            (prefix[b] - prefix[a]) / (b - a) as f64
        })
        .collect()
}

/// Rows of images of `shape` ([0, 1] floats, channel-first; grey for one channel, RGB for
/// three), each row labelled on the left. Images are scaled to about 112 pixels high.
pub fn image_rows(path: &Path, title: &str, shape: crate::data::Shape, rows: &[(&str, &[f32])], columns: usize) -> anyhow::Result<()> {
    let (w, h, plane) = (shape.width as u32, shape.height as u32, shape.height * shape.width);
    let scale = (112 / h.max(w)).clamp(1, 8);
    let (cell_w, cell_h) = (w * scale + 8, h * scale + 8);
    let (label_w, top) = (200u32, 50u32);
    let width = label_w + cell_w * columns as u32 + 10;
    let height = top + cell_h * rows.len() as u32 + 10;
    render(path, width.max(400), height, |root| {
        root.draw(&Text::new(title.to_owned(), (10, 12), (FAMILY, 24).into_font())).map_err(plot_err)?;
        for (r, (label, pixels)) in rows.iter().enumerate() {
            let y0 = (top + cell_h * r as u32) as i32;
            root.draw(&Text::new(label.to_string(), (10, y0 + (cell_h / 2) as i32 - 10), (FAMILY, 20).into_font())).map_err(plot_err)?;
            for (c, image) in pixels.chunks_exact(shape.pixels()).take(columns).enumerate() {
                let x0 = (label_w + cell_w * c as u32) as i32;
                for i in 0..plane {
                    let level = |ch: usize| (image[ch * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8;
                    let color =
                        if shape.channels >= 3 { RGBColor(level(0), level(1), level(2)) } else { RGBColor(level(0), level(0), level(0)) };
                    let (px, py) = (x0 + (i % shape.width) as i32 * scale as i32, y0 + (i / shape.width) as i32 * scale as i32);
                    root.draw(&Rectangle::new([(px, py), (px + scale as i32, py + scale as i32)], color.filled())).map_err(plot_err)?;
                }
            }
        }
        Ok(())
    })
}

/// The label [`scatter`] draws grey, as noise (a point no cluster took).
pub const NOISE_LABEL: u8 = u8::MAX;

/// 2-d points coloured by their true label (or cluster), with a legend of the ten digits;
/// [`NOISE_LABEL`] points are small and grey.
pub fn scatter(path: &Path, title: &str, points: &[f32], labels: &[u8], axis: (&str, &str)) -> anyhow::Result<()> {
    render(path, 900, 800, |root| {
        let bound = |k: usize| {
            let vals = points.iter().skip(k).step_by(2).copied();
            let (lo, hi) = vals.fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let pad = (hi - lo).max(1e-6) * 0.05;
            (lo - pad) as f64..(hi + pad) as f64
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(bound(0), bound(1))
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc(axis.0).y_desc(axis.1).label_style((FAMILY, 15)).draw().map_err(plot_err)?;
        // One colour a class; past the palette, colours repeat and the legend stops at it.
        let noise = points.chunks_exact(2).zip(labels).filter(|(_, l)| **l == NOISE_LABEL).map(|(p, _)| (p[0] as f64, p[1] as f64));
        chart.draw_series(noise.map(|p| Circle::new(p, 1, RGBColor(170, 170, 170).filled()))).map_err(plot_err)?;
        let classes = labels.iter().filter(|&&l| l != NOISE_LABEL).map(|&l| l as usize + 1).max().unwrap_or(0);
        for class in 0..classes {
            let colour = DIGIT_COLOURS[class % DIGIT_COLOURS.len()];
            let pts = points.chunks_exact(2).zip(labels).filter(|(_, l)| **l as usize == class).map(|(p, _)| (p[0] as f64, p[1] as f64));
            let series = chart.draw_series(pts.map(|p| Circle::new(p, 2, colour.mix(0.6).filled()))).map_err(plot_err)?;
            if class < DIGIT_COLOURS.len() {
                series.label(format!("{class}")).legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// A counts matrix (rows: true label, columns: cluster) as a heat map with the counts written in.
pub fn heatmap(path: &Path, title: &str, counts: &[Vec<u64>], columns: &[usize]) -> anyhow::Result<()> {
    let (rows, cols) = (counts.len(), columns.len());
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let shade = |t: f64| RGBColor((255.0 - 225.0 * t) as u8, (255.0 - 150.0 * t) as u8, 255 - (75.0 * t) as u8);
    render(path, 900, 820, |root| {
        let (area, scale) = root.split_horizontally(800);
        let mut chart = ChartBuilder::on(&area)
            .caption(title, (FAMILY, 22))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d((0..cols as i32 - 1).into_segmented(), (0..rows as i32 - 1).into_segmented())
            .map_err(plot_err)?;
        let centre_label = |v: &SegmentValue<i32>, f: &dyn Fn(i32) -> String| match v {
            SegmentValue::CenterOf(x) => f(*x),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(cols)
            .y_labels(rows)
            .x_desc("k-means cluster (ordered by the label it is matched to)")
            .y_desc("true label")
            .x_label_formatter(&|v| centre_label(v, &|x| columns.get(x as usize).map_or(String::new(), |c| c.to_string())))
            .y_label_formatter(&|v| centre_label(v, &|y| (rows as i32 - 1 - y).to_string()))
            .label_style((FAMILY, 16))
            .draw()
            .map_err(plot_err)?;
        for (r, row) in counts.iter().enumerate() {
            let y = (rows - 1 - r) as i32;
            for (x, &c) in columns.iter().enumerate() {
                let (x, n) = (x as i32, row[c]);
                let t = n as f64 / max;
                let cell = [(SegmentValue::Exact(x), SegmentValue::Exact(y)), (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1))];
                chart.draw_series(std::iter::once(Rectangle::new(cell, shade(t).filled()))).map_err(plot_err)?;
                let colour = if t > 0.55 { WHITE } else { BLACK };
                let style = TextStyle::from((FAMILY, 15).into_font()).color(&colour).pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                ));
                let mid = chart.backend_coord(&(SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)));
                area.draw(&Text::new(format!("{n}"), mid, style)).map_err(plot_err)?;
            }
        }
        // The colour scale: count 0 at the bottom, the largest cell at the top.
        let (top, bottom, x0) = (70i32, 740i32, 10i32);
        for i in 0..(bottom - top) {
            let t = 1.0 - i as f64 / (bottom - top) as f64;
            scale.draw(&Rectangle::new([(x0, top + i), (x0 + 22, top + i + 1)], shade(t).filled())).map_err(plot_err)?;
        }
        scale.draw(&Rectangle::new([(x0, top), (x0 + 22, bottom)], BLACK.stroke_width(1))).map_err(plot_err)?;
        let label = TextStyle::from((FAMILY, 14).into_font());
        scale.draw(&Text::new(format!("{}", max as u64), (x0 + 26, top - 6), label.clone())).map_err(plot_err)?;
        scale.draw(&Text::new("0".to_owned(), (x0 + 26, bottom - 8), label.clone())).map_err(plot_err)?;
        scale.draw(&Text::new("images".to_owned(), (x0 - 4, top - 28), label)).map_err(plot_err)?;
        Ok(())
    })
}

/// A named line of (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// Panels of curves sharing an integer x axis (`select_k`: a score per k), one line a
/// series, with a legend.
pub fn curves(path: &Path, title: &str, x_desc: &str, panels: &[(&str, Vec<Series>)]) -> anyhow::Result<()> {
    let cols = panels.len().max(1) as u32;
    render(path, 620 * cols + 20, 520, |root| {
        let root = root.titled(title, (FAMILY, 20)).map_err(plot_err)?;
        for (area, (name, series)) in root.split_evenly((1, cols as usize)).iter().zip(panels) {
            let all = series.iter().flat_map(|(_, pts)| pts.iter()).filter(|p| p.1.is_finite());
            let (x0, x1, y0, y1) =
                all.fold((f64::MAX, f64::MIN, f64::MAX, f64::MIN), |(a, b, c, d), p| (a.min(p.0), b.max(p.0), c.min(p.1), d.max(p.1)));
            if x0 > x1 {
                continue;
            }
            let pad = ((y1 - y0) * 0.08).max(1e-6);
            let mut chart = ChartBuilder::on(area)
                .caption(*name, (FAMILY, 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(x0 - 0.5..x1 + 0.5, (y0 - pad)..(y1 + pad))
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .x_labels(((x1 - x0) as usize + 1).min(20))
                .x_label_formatter(&|x| format!("{}", x.round() as i64))
                .label_style((FAMILY, 14))
                .light_line_style(WHITE)
                .draw()
                .map_err(plot_err)?;
            for (i, (label, pts)) in series.iter().enumerate() {
                let colour = DIGIT_COLOURS[i % DIGIT_COLOURS.len()];
                let pts: Vec<(f64, f64)> = pts.iter().copied().filter(|p| p.1.is_finite()).collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(3)));
                chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled()))).map_err(plot_err)?;
            }
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    })
}

/// One group of a strip plot: a model's values of one metric.
pub struct Strip<'a> {
    pub name: &'a str,
    /// Every clustering (each training seed x k-means seed): small grey dots.
    pub clusterings: Vec<f64>,
    /// One value per training seed (its mean over the k-means seeds): large dots.
    pub per_seed: Vec<f64>,
}

/// Side-by-side panels (one per metric) of strips (one per model): the spread of a metric
/// over k-means seeds and training seeds, the mean over training seeds as a bar.
pub fn strips(path: &Path, title: &str, panels: &[(&str, Vec<Strip<'_>>)]) -> anyhow::Result<()> {
    // Two panels a row; each wide enough for its group labels.
    let groups = panels.iter().map(|(_, g)| g.len()).max().unwrap_or(1) as u32;
    let (cols, rows) = (2u32.min(panels.len().max(1) as u32), panels.len().max(1).div_ceil(2) as u32);
    let panel_w = (110 * groups).max(450);
    render(path, panel_w * cols + 40, 420 * rows + 40, |root| {
        let root = root.titled(title, (FAMILY, 22)).map_err(plot_err)?;
        for (area, (metric, groups)) in root.split_evenly((rows as usize, cols as usize)).iter().zip(panels) {
            let all = groups.iter().flat_map(|g| g.clusterings.iter().chain(&g.per_seed)).copied();
            let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let pad = ((hi - lo) * 0.1).max(1e-3);
            let n = groups.len();
            let mut chart = ChartBuilder::on(area)
                .caption(*metric, (FAMILY, 20))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(-0.5..n as f64 - 0.5, (lo - pad)..(hi + pad))
                .map_err(plot_err)?;
            let names: Vec<&str> = groups.iter().map(|g| g.name).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(WHITE)
                .x_labels(n)
                .x_label_formatter(&|x| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 {
                        names.get(i as usize).map_or(String::new(), |s| s.to_string())
                    } else {
                        String::new()
                    }
                })
                .label_style((FAMILY, 15))
                .draw()
                .map_err(plot_err)?;
            for (i, g) in groups.iter().enumerate() {
                let colour = DIGIT_COLOURS[i % DIGIT_COLOURS.len()];
                let x = i as f64;
                // Deterministic jitter, so that equal values stay visible.
                let jitter = |j: usize, spread: f64| ((j * 37 % 17) as f64 / 16.0 - 0.5) * spread;
                chart
                    .draw_series(
                        g.clusterings
                            .iter()
                            .enumerate()
                            .map(|(j, &v)| Circle::new((x + jitter(j, 0.5), v), 2, RGBColor(150, 150, 150).filled())),
                    )
                    .map_err(plot_err)?;
                chart
                    .draw_series(g.per_seed.iter().enumerate().map(|(j, &v)| Circle::new((x + jitter(j, 0.25), v), 6, colour.filled())))
                    .map_err(plot_err)?;
                if !g.per_seed.is_empty() {
                    let mean = g.per_seed.iter().sum::<f64>() / g.per_seed.len() as f64;
                    chart
                        .draw_series(std::iter::once(PathElement::new(vec![(x - 0.3, mean), (x + 0.3, mean)], colour.stroke_width(3))))
                        .map_err(plot_err)?;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_moving_average_is_centred() {
        let v = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(super::moving_average(&v, 3), [1.5, 2.0, 3.0, 4.0, 4.5]);
        assert_eq!(super::moving_average(&v, 1), [1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn log_axis_labels_stay_distinct() {
        assert_eq!(["0.1", "0.105", "0.0213", "0.015", "2", "150"], [0.1, 0.105, 0.02131, 0.015, 2.0, 150.0].map(super::significant));
    }
}
