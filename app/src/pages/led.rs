//! The LED sign on a `<canvas>`: every animation frame (the display's rate,
//! `requestAnimationFrame`) runs the shared renderer and, when the frame
//! changed, draws it as a real sign looks: a dark face, round LEDs with a
//! glow, and dim unlit LEDs.
//!
//! The canvas carries what it shows for tests and tools: `data-message` (the
//! message id on it), `data-lit` (lit LEDs in the frame drawn last) and
//! `data-width` / `data-height` (the frame's size in LEDs).

use leptos::prelude::*;

use crate::render::Rgb;
use crate::sign::{MAX_HEIGHT, MAX_WIDTH, MIN_HEIGHT, MIN_WIDTH, Message, Sign};

/// The message a sign shows, as the canvas needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Showing {
    pub id: String,
    pub message: Message,
    /// Changes when the same message comes up again (a playlist moved on), so
    /// its animation starts over as it does on the devices.
    pub round: usize,
}

/// The sign's size in LEDs, clamped as the renderer clamps it.
fn leds(sign: Option<&Sign>) -> (u16, u16) {
    sign.map_or((64, 16), |s| {
        (
            s.width.clamp(MIN_WIDTH, MAX_WIDTH),
            s.height.clamp(MIN_HEIGHT, MAX_HEIGHT),
        )
    })
}

#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
/// An unlit LED: the background lifted a little toward the LED's own colour,
/// as a real dark LED still shows its lens.
pub fn unlit_color(background: Rgb, tint: Rgb) -> Rgb {
    let lift = |b: u8, t: u8| b.saturating_add(12).saturating_add(t / 14);
    Rgb::new(
        lift(background.r, tint.r),
        lift(background.g, tint.g),
        lift(background.b, tint.b),
    )
}

/// A sign drawn live. `pitch` is the distance between LEDs in canvas pixels.
#[component]
pub fn LedSign(
    #[prop(into)] sign: Signal<Option<Sign>>,
    #[prop(into)] showing: Signal<Option<Showing>>,
    #[prop(default = 10.0)] pitch: f64,
    #[prop(optional, into)] label: String,
    #[prop(optional)] testid: &'static str,
) -> impl IntoView {
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    // The first size comes from the server's render so the page does not jump;
    // afterwards the drawing loop resizes the canvas itself.
    let (w, h) = sign.with_untracked(|s| leds(s.as_ref()));
    #[cfg(feature = "hydrate")]
    draw::start(canvas, sign, showing, pitch);
    #[cfg(not(feature = "hydrate"))]
    let _ = showing;
    let px = |n: u16| ((f64::from(n) * pitch).round() as u32).to_string();
    view! {
        <canvas
            node_ref=canvas
            class="led-sign"
            data-testid=testid
            role="img"
            aria-label=label
            width=px(w)
            height=px(h)
            data-message=""
            data-lit="0"
        ></canvas>
    }
    .into_any()
}

#[cfg(feature = "hydrate")]
mod draw {
    //! The browser's drawing loop.

    use std::cell::RefCell;
    use std::rc::Rc;

    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

    use super::{Showing, leds, unlit_color};
    use crate::render::{Frame, Rgb, led_color, render_into};
    use crate::sign::{Message, Sign};

    const FACE: &str = "#060708";

    /// What the loop draws, updated by an effect when the signals change.
    #[derive(Default)]
    struct Scene {
        sign: Option<Sign>,
        showing: Option<Showing>,
        /// When the shown message came up, in `performance.now()` milliseconds.
        start: f64,
        /// Something changed that the pixels alone do not show (size, tint).
        dirty: bool,
    }

    struct Painter {
        canvas: NodeRef<leptos::html::Canvas>,
        scene: Rc<RefCell<Scene>>,
        /// Disposed with the component: the loop stops then.
        alive: StoredValue<()>,
        pitch: f64,
        frame: Frame,
        drawn: Option<Frame>,
        message_attr: Option<String>,
        lit_attr: Option<usize>,
        context: Option<(HtmlCanvasElement, CanvasRenderingContext2d)>,
    }

    fn now() -> f64 {
        window().performance().map_or(0.0, |p| p.now())
    }

    pub fn start(
        canvas: NodeRef<leptos::html::Canvas>,
        sign: Signal<Option<Sign>>,
        showing: Signal<Option<Showing>>,
        pitch: f64,
    ) {
        let scene = Rc::new(RefCell::new(Scene::default()));
        {
            let scene = Rc::clone(&scene);
            Effect::new(move |_| {
                let sign = sign.get();
                let showing = showing.get();
                let mut scene = scene.borrow_mut();
                if scene.showing != showing {
                    scene.start = now();
                }
                scene.sign = sign;
                scene.showing = showing;
                scene.dirty = true;
            });
        }
        let painter = Painter {
            canvas,
            scene,
            alive: StoredValue::new(()),
            pitch,
            frame: Frame::default(),
            drawn: None,
            message_attr: None,
            lit_attr: None,
            context: None,
        };
        // Started once, after hydration, when the canvas exists.
        let mut painter = Some(painter);
        Effect::new(move |_| {
            if let Some(painter) = painter.take() {
                tick(Rc::new(RefCell::new(painter)));
            }
        });
    }

    fn tick(painter: Rc<RefCell<Painter>>) {
        if painter.borrow().alive.try_with_value(|_| ()).is_none() {
            return;
        }
        painter.borrow_mut().step();
        request_animation_frame(move || tick(painter));
    }

    impl Painter {
        fn step(&mut self) {
            let Some(element) = self.canvas.get_untracked() else {
                return;
            };
            let element: HtmlCanvasElement = element;
            if self
                .context
                .as_ref()
                .is_none_or(|(canvas, _)| canvas != &element)
            {
                let context = element
                    .get_context("2d")
                    .ok()
                    .flatten()
                    .and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok());
                let Some(context) = context else { return };
                self.context = Some((element.clone(), context));
                self.drawn = None;
            }
            let (frame, tint, message) = {
                let mut scene = self.scene.borrow_mut();
                if std::mem::take(&mut scene.dirty) {
                    self.drawn = None;
                }
                let sign = scene.sign.clone().unwrap_or_default();
                let tint = led_color(sign.color_depth).unwrap_or(Rgb::new(0x90, 0x90, 0x90));
                let elapsed = (now() - scene.start).max(0.0) as u64;
                match &scene.showing {
                    Some(showing) => {
                        render_into(&mut self.frame, &sign, &showing.message, elapsed);
                        (&self.frame, tint, showing.id.clone())
                    }
                    None => {
                        // Nothing on the sign: all LEDs dark.
                        let blank = Message {
                            text: String::new(),
                            ..Message::default()
                        };
                        render_into(&mut self.frame, &sign, &blank, 0);
                        (&self.frame, tint, String::new())
                    }
                }
            };
            if self.drawn.as_ref() == Some(frame) {
                return;
            }
            let Some((canvas, context)) = &self.context else {
                return;
            };
            let (w, h) = leds(Some(&Sign {
                width: frame.width,
                height: frame.height,
                ..Sign::default()
            }));
            let px = |n: u16| (f64::from(n) * self.pitch).round() as u32;
            if canvas.width() != px(w) || canvas.height() != px(h) {
                canvas.set_width(px(w));
                canvas.set_height(px(h));
                let _ = canvas.set_attribute("data-width", &w.to_string());
                let _ = canvas.set_attribute("data-height", &h.to_string());
            } else if canvas.get_attribute("data-width").is_none() {
                let _ = canvas.set_attribute("data-width", &w.to_string());
                let _ = canvas.set_attribute("data-height", &h.to_string());
            }
            paint(context, frame, self.pitch, tint);
            let lit = frame.lit_count();
            // Attributes follow what was just drawn, so a test reading them sees this frame.
            if self.message_attr.as_deref() != Some(message.as_str()) {
                let _ = canvas.set_attribute("data-message", &message);
                self.message_attr = Some(message);
            }
            if self.lit_attr != Some(lit) {
                let _ = canvas.set_attribute("data-lit", &lit.to_string());
                self.lit_attr = Some(lit);
            }
            self.drawn = Some(frame.clone());
        }
    }

    fn key(c: Rgb) -> u32 {
        (u32::from(c.r) << 16) | (u32::from(c.g) << 8) | u32::from(c.b)
    }

    /// `alpha` as CSS text: formatting an `f64` would pull float printing into the bundle.
    fn css(c: Rgb, alpha: &str) -> String {
        format!("rgba({},{},{},{alpha})", c.r, c.g, c.b)
    }

    /// One path of circles, filled once: a few fills per frame instead of one per LED.
    fn dots(ctx: &CanvasRenderingContext2d, run: &[(u32, u32)], width: u16, pitch: f64, r: f64) {
        ctx.begin_path();
        let width = u32::from(width.max(1));
        for &(_, index) in run {
            let x = (f64::from(index % width) + 0.5) * pitch;
            let y = (f64::from(index / width) + 0.5) * pitch;
            ctx.move_to(x + r, y);
            let _ = ctx.arc(x, y, r, 0.0, std::f64::consts::TAU);
        }
        ctx.fill();
    }

    fn paint(ctx: &CanvasRenderingContext2d, frame: &Frame, pitch: f64, tint: Rgb) {
        let (w, h) = (
            f64::from(frame.width) * pitch,
            f64::from(frame.height) * pitch,
        );
        ctx.set_fill_style_str(FACE);
        ctx.fill_rect(0.0, 0.0, w, h);
        // Group the LEDs by colour: a mono sign has two or three colours per frame.
        let mut order: Vec<(u32, u32)> = frame
            .pixels
            .iter()
            .zip(0u32..)
            .map(|(&c, i)| (key(c), i))
            .collect();
        order.sort_unstable();
        let background = key(frame.background);
        let color = |k: u32| Rgb::new((k >> 16) as u8, (k >> 8) as u8, k as u8);
        // First the dark LEDs and every glow, then the lit cores on top, so a
        // neighbour's glow never washes over a lit LED.
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(k, _)) = run.first() else { continue };
            if k == background {
                ctx.set_fill_style_str(&css(unlit_color(color(k), tint), "1"));
                dots(ctx, run, frame.width, pitch, pitch * 0.36);
            } else {
                ctx.set_fill_style_str(&css(color(k), "0.16"));
                dots(ctx, run, frame.width, pitch, pitch * 0.72);
            }
        }
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(k, _)) = run.first() else { continue };
            if k != background {
                ctx.set_fill_style_str(&css(color(k), "1"));
                dots(ctx, run, frame.width, pitch, pitch * 0.4);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlit_leds_are_dim_but_visible() {
        let c = unlit_color(Rgb::BLACK, Rgb::new(0xff, 0xb0, 0x00));
        assert!(c.r > 0 && c.r < 40, "{c:?}");
        assert_eq!(leds(None), (64, 16));
    }
}
