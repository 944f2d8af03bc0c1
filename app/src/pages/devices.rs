//! `/devices`: the real signs that mirror Marquee's signs (AWTRIX 3 clocks, WLED
//! matrices, Tasmota displays, Marquee devices), live: whether each is online, what it
//! reported and which sign it mirrors. Admins pair a device (the settings to type into
//! it, the password shown once) and watch it connect; editors bind a device to a sign.
//! Also the list of a sign's own devices on the sign's page.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::common::keyed_rows;
use super::common::{
    DeleteButton, ErrorNote, LiveStatus, NumberField, describe, number_field, read_sign, sign_title,
};
use super::common::{When, handler};
use super::forms::{CopyButton, TextField, act, short_time};
use crate::api::{self, Failure};
use crate::auth::{Auth, use_auth};
use crate::device::{Device, DeviceKind, MAX_DEVICE_HEIGHT, MAX_DEVICE_WIDTH, Pairing};
use crate::live::{Live, Record};

/// A device record: `None` while absent, `Err` (in words) if it is not a valid device.
pub fn read_device(records: &BTreeMap<String, Record>, id: &str) -> Option<Result<Device, String>> {
    records
        .get(id)
        .map(|record| Device::from_json(&record.value).map_err(|e| e.to_string()))
}

/// The ids of the valid devices that mirror `sign`.
pub fn mirroring(records: &BTreeMap<String, Record>, sign: &str) -> Vec<String> {
    records
        .iter()
        .filter(|(_, record)| {
            Device::from_json(&record.value).is_ok_and(|d| d.sign.as_deref() == Some(sign))
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// What a device is called on the page: its name, else its id.
pub fn device_title(device: Option<&Device>, id: &str) -> String {
    device
        .map(|d| d.name.as_str())
        .filter(|name| !name.is_empty())
        .unwrap_or(id)
        .to_string()
}

/// The REST path of one device.
fn device_path(id: &str) -> String {
    format!("/api/devices/{}", api::segment(id))
}

/// Checks the pairing form as typed; the request body, or the problem in words. Only a
/// WLED matrix takes a size from the form: the other firmwares have theirs (or report it).
pub fn pair_body(kind: DeviceKind, name: &str, width: &str, height: &str) -> Result<Value, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("Name the device after where it hangs, such as “kitchen clock”.".into());
    }
    let (width, height) = if kind == DeviceKind::Wled {
        (number_field(width), number_field(height))
    } else {
        let (width, height) = kind.default_size();
        (Value::from(width), Value::from(height))
    };
    let value = json!({"kind": kind.as_str(), "name": name, "width": width, "height": height});
    // The server checks too; checking here names the field before anything is sent.
    Device::from_json(&value).map_err(|e| e.to_string())?;
    Ok(value)
}

/// The command that runs Marquee's simulated device with these settings.
pub fn device_sim_command(pairing: &Pairing) -> String {
    let host = if pairing.broker_host.contains(':') {
        format!("[{}]", pairing.broker_host)
    } else {
        pairing.broker_host.clone()
    };
    let password = pairing.password.as_deref().unwrap_or("PASSWORD");
    format!(
        "marquee device-sim --broker {host}:{} --username {} --password {password} --prefix {}",
        pairing.broker_port, pairing.username, pairing.prefix
    )
}

/// Where the firmware's own settings for MQTT are, as its owner finds them.
fn where_to_enter(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Awtrix3 => "On the clock's web page, open MQTT and enter:",
        DeviceKind::Wled => "In WLED, open Config → Sync Interfaces → MQTT, enable it and enter:",
        DeviceKind::Tasmota => "In Tasmota, open Configuration → Configure MQTT and enter:",
        DeviceKind::Marquee => "Give the device these settings:",
    }
}

/// One reported detail as text: strings as they are, anything else as JSON.
fn detail_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// "online", or "offline" with when it was last seen.
fn presence(device: &Device) -> (&'static str, String) {
    if device.online {
        ("online", String::new())
    } else {
        let seen = device.last_seen.as_deref().map_or_else(
            || "never seen".to_string(),
            |stamp| format!("last seen {}", short_time(stamp)),
        );
        ("offline", seen)
    }
}

/// The answer to creating a record: its new id.
#[derive(Deserialize)]
struct Created {
    id: String,
}

/// Binds the device to `sign`, or unbinds it (`None`).
async fn bind(auth: Auth, device: String, sign: Option<String>) -> Result<(), Failure> {
    let body = json!({ "sign": sign });
    api::patch::<Value>(Some(auth), &device_path(&device), &body)
        .await
        .map(|_| ())
}

/// Makes a full-colour sign of the device's size, named after it, and binds the device to it.
async fn bind_new_sign(
    auth: Auth,
    device: String,
    name: String,
    width: u16,
    height: u16,
) -> Result<(), Failure> {
    let body = json!({"name": name, "width": width, "height": height, "color_depth": "rgb"});
    let created = api::post::<Created>(Some(auth), "/api/signs/", Some(&body)).await?;
    bind(auth, device, Some(created.id)).await
}

#[component]
pub fn DevicesPage() -> impl IntoView {
    let devices = Live::new();
    devices.connect();
    devices.watch(Some("devices".into()));
    let signs = Live::new();
    signs.connect();
    signs.watch(Some("signs".into()));
    let auth = use_auth();
    let admin = auth.is_admin();
    let can_edit = auth.can_edit();
    // The pairing card shown (with the password, once, after pairing or regenerating).
    let card = RwSignal::new(None::<Pairing>);
    let show_card = Callback::new(move |pairing: Pairing| card.set(Some(pairing)));
    // A card whose device was removed (here or elsewhere) closes; one whose device has
    // not arrived yet stays.
    let card_seen = StoredValue::new(None::<String>);
    Effect::new(move |_| {
        let Some(id) = card.with(|c| c.as_ref().map(|p| p.id.clone())) else {
            return;
        };
        if devices.records.with(|r| r.contains_key(&id)) {
            card_seen.set_value(Some(id));
        } else if card_seen.with_value(|seen| seen.as_deref() == Some(id.as_str())) {
            card.set(None);
        }
    });
    let ids = move || {
        devices
            .records
            .with(|r| r.keys().cloned().collect::<Vec<_>>())
    };
    view! {
        <Title text="Devices · Marquee" />
        <div class="toolbar">
            <h1>"Devices"</h1>
            <span class="spacer"></span>
            <LiveStatus live=devices also=signs />
        </div>
        <p class="muted page-note">
            "Real signs that mirror Marquee's signs over MQTT: AWTRIX 3 clocks, WLED matrices, "
            "Tasmota displays and devices speaking Marquee's own protocol."
        </p>
        // Only admins pair (the server refuses the rest, 403).
        <When when=move || admin.get()>
            <PairForm paired=show_card />
        </When>
        {move || {
            card.get()
                .map(|pairing| {
                    view! {
                        <PairingCard
                            pairing
                            devices
                            signs
                            can_edit
                            on_done=Callback::new(move |()| card.set(None))
                        />
                    }
                    .into_any()
                })
        }}
        <section class="panel devices" data-testid="devices">
            <div class="panel-head">
                <h2>"Paired devices"</h2>
            </div>
            {move || {
                devices
                    .table_error
                    .get()
                    .map(|error| {
                        view! {
                            <p class="error" data-testid="error" data-for="devices">
                                {describe(&error)}
                            </p>
                        }
                            .into_any()
                    })
            }}
            <div class="table-wrap">
                <table class="records-table devices-table">
                    <thead>
                        <tr>
                            <th>"Device"</th>
                            <th>"Mirrors"</th>
                            <th>"Presence"</th>
                            <th>"Reported"</th>
                            <th class="col-actions"></th>
                        </tr>
                    </thead>
                    <tbody>
                        {keyed_rows(
                            ids,
                            move |id| {
                                view! { <DeviceRow id devices signs can_edit admin show_card /> }
                                    .into_any()
                            },
                        )}
                    </tbody>
                </table>
            </div>
            <When when=move || devices.synced.get() && devices.records.with(|r| r.is_empty())>
                <p class="muted empty">
                    {move || String::from({
                        if admin.get() {
                            "No devices yet: pair the first one above."
                        } else {
                            "No devices yet. An admin pairs them here."
                        }
                    })}
                </p>
            </When>
        </section>
    }
    .into_any()
}

#[component]
fn DeviceRow(
    id: String,
    devices: Live,
    signs: Live,
    can_edit: Memo<bool>,
    admin: Memo<bool>,
    show_card: Callback<Pairing>,
) -> impl IntoView {
    let auth = use_auth();
    let record = {
        let id = id.clone();
        Memo::new(move |_| devices.records.with(|r| read_device(r, &id)))
    };
    let device = Memo::new(move |_| record.get().and_then(Result::ok));
    let fresh = {
        let id = id.clone();
        move || {
            devices
                .records
                .with(|r| r.get(&id).is_some_and(|rec| rec.fresh))
        }
    };
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let title = {
        let id = id.clone();
        move || device.with(|d| device_title(d.as_ref(), &id))
    };
    let mirrors = move || {
        let sign = device.get().and_then(|d| d.sign);
        match sign {
            Some(sign) => {
                let name = signs.records.with(|r| {
                    let valid = read_sign(r, &sign).and_then(Result::ok);
                    sign_title(valid.as_ref(), &sign)
                });
                view! {
                    <a href=format!("/signs/{sign}") data-testid="device-sign" data-sign=sign>
                        {name}
                    </a>
                }
                .into_any()
            }
            None => {
                view! { <span class="muted" data-testid="device-sign">"no sign"</span> }.into_any()
            }
        }
    };
    let status = move || {
        device
            .get()
            .map(|d| presence(&d))
            .unwrap_or(("offline", String::new()))
    };
    let pairing_settings = {
        let path = format!("{}/pairing", device_path(&id));
        move |_| {
            let path = path.clone();
            act(
                busy,
                error,
                async move { api::get::<Pairing>(Some(auth), &path).await },
                move |pairing| show_card.run(pairing),
            );
        }
    };
    let regenerate = {
        let path = format!("{}/password", device_path(&id));
        Callback::new(move |()| {
            let path = path.clone();
            act(
                busy,
                error,
                async move { api::post::<Pairing>(Some(auth), &path, Some(&json!({}))).await },
                move |pairing| show_card.run(pairing),
            );
        })
    };
    let remove = {
        let path = device_path(&id);
        Callback::new(move |()| {
            let path = path.clone();
            act(
                busy,
                error,
                async move { api::delete(Some(auth), &path).await },
                |()| {},
            );
        })
    };
    let binder_id = id.clone();
    view! {
        <tr data-testid="device-row" data-device-id=id class:fresh=move || fresh()>
            <td>
                <strong data-testid="device-name">{move || title()}</strong>
                <div class="muted" data-testid="device-kind">
                    {move || device.get().map(|d| d.kind.label().to_string())}
                </div>
                {move || {
                    record
                        .get()
                        .and_then(Result::err)
                        .map(|problem| {
                            view! {
                                <p class="warning">{format!("Not a valid device: {problem}")}</p>
                            }
                                .into_any()
                        })
                }}
                {move || {
                    device
                        .get()
                        .and_then(|d| d.warning)
                        .map(|warning| {
                            view! {
                                <p class="warning" data-testid="device-warning">
                                    {warning}
                                </p>
                            }
                                .into_any()
                        })
                }}
            </td>
            <td class="col-mirrors">
                <div class="mirrors">{move || mirrors()}</div>
                <When when=move || can_edit.get() && device.get().is_some()>
                    <Binder id=binder_id.clone() device signs />
                </When>
            </td>
            <td>
                <span
                    class="presence"
                    data-state=move || String::from(status().0)
                    data-testid="device-status"
                >
                    {move || String::from(status().0)}
                </span>
                <div class="muted" data-testid="device-last-seen">
                    {move || status().1}
                </div>
            </td>
            <td>
                <div data-testid="device-firmware">
                    {move || device.get().and_then(|d| d.firmware).unwrap_or_else(|| "—".into())}
                </div>
                <div class="muted" data-testid="device-size">
                    {move || device.get().map(|d| format!("{}×{}", d.width, d.height))}
                </div>
            </td>
            <td class="col-actions">
                <When when=move || admin.get()>
                    <div class="device-actions">
                        <button
                            type="button"
                            data-testid="device-pairing"
                            disabled=move || busy.get()
                            on:click=handler(leptos::ev::click, pairing_settings.clone())
                        >
                            "Settings to enter"
                        </button>
                        <DeleteButton
                            busy
                            testid="device-regenerate"
                            on_confirm=regenerate
                            label="Regenerate password"
                            confirm="Confirm new password"
                        />
                        <DeleteButton
                            busy
                            testid="device-remove"
                            on_confirm=remove
                            label="Remove"
                            confirm="Confirm remove"
                        />
                    </div>
                </When>
                <ErrorNote error place="device" />
            </td>
        </tr>
    }
    .into_any()
}

/// Binding a device: a sign picker with Bind, Unbind, and a new sign of the device's size.
#[component]
fn Binder(id: String, device: Memo<Option<Device>>, signs: Live) -> impl IntoView {
    let auth = use_auth();
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let options = move || {
        signs.records.with(|records| {
            records
                .iter()
                .map(|(id, record)| {
                    let sign = crate::sign::Sign::from_json(&record.value).ok();
                    let label = match &sign {
                        Some(s) => {
                            format!("{} ({}×{})", sign_title(Some(s), id), s.width, s.height)
                        }
                        None => id.clone(),
                    };
                    (id.clone(), label)
                })
                .collect::<Vec<_>>()
        })
    };
    let bound = Memo::new(move |_| device.get().and_then(|d| d.sign));
    // What the picker shows: what was picked, else the sign it mirrors, else the first sign.
    let chosen = RwSignal::new(None::<String>);
    let picked = Memo::new(move |_| {
        let listed = options();
        let exists = |id: &String| listed.iter().any(|(i, _)| i == id);
        chosen
            .get()
            .filter(exists)
            .or_else(|| bound.get().filter(exists))
            .or_else(|| listed.first().map(|(i, _)| i.clone()))
    });
    let do_bind = {
        let id = id.clone();
        move |_| {
            let Some(sign) = picked.get_untracked() else {
                error.set(Some(
                    "There is no sign yet: make one of the device's size.".into(),
                ));
                return;
            };
            act(busy, error, bind(auth, id.clone(), Some(sign)), |()| {});
        }
    };
    let do_unbind = {
        let id = id.clone();
        move |_| act(busy, error, bind(auth, id.clone(), None), |()| {})
    };
    let size = move || device.get().map(|d| (d.width, d.height)).unwrap_or((0, 0));
    let do_new_sign = {
        let id = id.clone();
        move |_| {
            let Some(d) = device.get_untracked() else {
                return;
            };
            let name = device_title(Some(&d), &id);
            act(
                busy,
                error,
                bind_new_sign(auth, id.clone(), name, d.width, d.height),
                |()| {},
            );
        }
    };
    view! {
        <div class="binder">
            <select
                data-testid="bind-select"
                aria-label="Sign to mirror"
                disabled=move || busy.get()
                prop:value=move || picked.get().unwrap_or_default()
                on:change=handler(leptos::ev::change, move |ev| chosen.set(Some(event_target_value(&ev))))
            >
                {move || {
                    let picked = picked.get();
                    options()
                        .into_iter()
                        .map(|(id, label)| {
                            let selected = picked.as_deref() == Some(id.as_str());
                            view! {
                                <option value=id selected=selected>
                                    {label}
                                </option>
                            }
                        })
                        .collect_view()
                }}
            </select>
            <button
                type="button"
                data-testid="bind-button"
                disabled=move || busy.get() || picked.get().is_none()
                on:click=handler(leptos::ev::click, do_bind)
            >
                "Bind"
            </button>
            <When when=move || bound.get().is_some()>
                <button
                    type="button"
                    data-testid="unbind-button"
                    disabled=move || busy.get()
                    on:click=handler(leptos::ev::click, do_unbind.clone())
                >
                    "Unbind"
                </button>
            </When>
            <button
                type="button"
                data-testid="new-sign-button"
                title="Make a full-colour sign of the device's size, named after it, and bind to it"
                disabled=move || busy.get()
                on:click=handler(leptos::ev::click, do_new_sign)
            >
                {move || {
                    let (width, height) = size();
                    format!("New sign of its size ({width}×{height})")
                }}
            </button>
        </div>
        <ErrorNote error place="binder" />
    }
    .into_any()
}

/// Pairing (admins): the firmware, a name and, for WLED, the matrix size.
#[component]
fn PairForm(paired: Callback<Pairing>) -> impl IntoView {
    let auth = use_auth();
    let kind = RwSignal::new(DeviceKind::Awtrix3);
    let name = RwSignal::new(String::new());
    let (wled_width, wled_height) = DeviceKind::Wled.default_size();
    let width = RwSignal::new(wled_width.to_string());
    let height = RwSignal::new(wled_height.to_string());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let pair = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let body = match pair_body(
            kind.get_untracked(),
            &name.get_untracked(),
            &width.get_untracked(),
            &height.get_untracked(),
        ) {
            Ok(body) => body,
            Err(problem) => {
                error.set(Some(problem));
                return;
            }
        };
        act(
            busy,
            error,
            async move { api::post::<Pairing>(Some(auth), "/api/devices/", Some(&body)).await },
            move |pairing| {
                name.try_set(String::new());
                paired.run(pairing);
            },
        );
    };
    let options = DeviceKind::ALL
        .iter()
        .map(|k| view! { <option value=k.as_str()>{k.label()}</option> })
        .collect_view();
    view! {
        <form class="panel pair-form" data-testid="pair-form" novalidate=true on:submit=handler(leptos::ev::submit, pair)>
            <h2>"Pair a device"</h2>
            <p class="muted small">
                "Marquee makes the device an MQTT account of its own and shows the settings "
                "to type into the device's own settings page."
            </p>
            <div class="field-row">
                <label class="field">
                    <span>"Firmware"</span>
                    <select
                        data-testid="pair-kind"
                        prop:value=move || kind.get().as_str()
                        on:change=handler(leptos::ev::change, move |ev| {
                            if let Some(k) = DeviceKind::from_name(&event_target_value(&ev)) {
                                kind.set(k);
                                error.set(None);
                            }
                        })
                    >
                        {options}
                    </select>
                </label>
                <TextField
                    label="Name"
                    value=name
                    name="device-name"
                    testid="pair-name"
                    placeholder="kitchen clock"
                    edited=Callback::new(move |()| error.set(None))
                />
                // MQTT cannot tell a WLED matrix's size: it is asked here.
                <When when=move || kind.get() == DeviceKind::Wled>
                    <NumberField
                        label="Matrix width (LEDs)"
                        testid="pair-width"
                        min=1
                        max=MAX_DEVICE_WIDTH.into()
                        value=width
                    />
                    <NumberField
                        label="Matrix height (LEDs)"
                        testid="pair-height"
                        min=1
                        max=MAX_DEVICE_HEIGHT.into()
                        value=height
                    />
                </When>
            </div>
            <ErrorNote error place="pair" />
            <div class="buttons">
                <button
                    class="primary"
                    type="submit"
                    data-testid="pair-submit"
                    disabled=move || busy.get()
                >
                    "Pair"
                </button>
            </div>
        </form>
    }
    .into_any()
}

/// The settings to type into a device, then its first connection, live.
#[component]
fn PairingCard(
    pairing: Pairing,
    devices: Live,
    signs: Live,
    can_edit: Memo<bool>,
    on_done: Callback<()>,
) -> impl IntoView {
    let id = pairing.id.clone();
    let device = {
        let id = id.clone();
        Memo::new(move |_| {
            devices
                .records
                .with(|r| read_device(r, &id))
                .and_then(Result::ok)
        })
    };
    let online = move || device.with(|d| d.as_ref().is_some_and(|d| d.online));
    let title = {
        let id = id.clone();
        move || {
            let name = device.with(|d| device_title(d.as_ref(), &id));
            format!("Pairing {name} ({})", pairing.kind.label())
        }
    };
    let fields = pairing
        .fields()
        .into_iter()
        .map(|(label, value)| {
            // Without its password (shown once, earlier) the field says so: nothing to copy.
            let absent = label == "Password" && pairing.password.is_none();
            view! {
                <div class="pairing-field" data-testid="pairing-field" data-label=label>
                    <span class="pairing-label">{label}</span>
                    <code data-testid="pairing-value" class:absent=absent>
                        {value.clone()}
                    </code>
                    {(!absent)
                        .then(|| view! { <CopyButton text=value label=format!("Copy {label}") /> })}
                </div>
            }
        })
        .collect_view();
    let shown_once = pairing.password.is_some();
    let other_hosts: Vec<String> = pairing
        .broker_hosts
        .iter()
        .filter(|host| **host != pairing.broker_host)
        .cloned()
        .collect();
    let command = (pairing.kind == DeviceKind::Marquee).then(|| device_sim_command(&pairing));
    let status = move || {
        if online() {
            "The device is connected.".to_string()
        } else {
            match device.get().and_then(|d| d.last_seen) {
                Some(seen) => format!(
                    "Offline since {}: waiting for the device to connect again…",
                    short_time(&seen)
                ),
                None => "Waiting for the device to connect…".to_string(),
            }
        }
    };
    let details = move || {
        device
            .get()
            .map(|d| d.details)
            .unwrap_or_else(Map::new)
            .into_iter()
            .map(|(key, value)| (key, detail_text(&value)))
            .collect::<Vec<_>>()
    };
    let binder_id = id.clone();
    view! {
        <section class="panel pairing-card" data-testid="pairing-card" data-device-id=id>
            <div class="panel-head">
                <h2>{move || title()}</h2>
                <button type="button" data-testid="pairing-done" on:click=handler(leptos::ev::click, move |_| on_done.run(()))>
                    "Done"
                </button>
            </div>
            <p>{where_to_enter(pairing.kind)}</p>
            {shown_once
                .then(|| {
                    view! {
                        <p class="once-secret" data-testid="password-once">
                            <strong>"The password is shown once"</strong>
                            " — copy it now: it is not shown again. If it is lost, regenerate it."
                        </p>
                    }
                })}
            <div class="pairing-fields">{fields}</div>
            {pairing
                .broker_warning
                .clone()
                .map(|warning| {
                    view! {
                        <p class="warning" data-testid="broker-warning">
                            {warning}
                        </p>
                    }
                })}
            {(!other_hosts.is_empty())
                .then(|| {
                    view! {
                        <p class="muted small">
                            "This machine can also be reached at: " {other_hosts.join(", ")}
                        </p>
                    }
                })}
            {command
                .map(|command| {
                    view! {
                        <div class="hint-line" data-testid="device-sim-hint">
                            <p class="muted small">
                                "No device at hand? Marquee simulates one, from this machine:"
                            </p>
                            <div class="pairing-field">
                                <code data-testid="device-sim-command">{command.clone()}</code>
                                <CopyButton text=command label="Copy the command".to_string() />
                            </div>
                        </div>
                    }
                })}
            <p
                class="pairing-status"
                data-testid="pairing-status"
                data-state=move || String::from(if online() { "online" } else { "waiting" })
            >
                <span class="dot" aria-hidden="true"></span>
                {move || status()}
            </p>
            <When when=move || device.with(|d| d.as_ref().is_some_and(|d| d.firmware.is_some()))>
                <p class="small">
                    "Firmware: "
                    <strong data-testid="pairing-firmware">
                        {move || device.get().and_then(|d| d.firmware)}
                    </strong>
                </p>
            </When>
            <When when=move || !details().is_empty()>
                <dl class="device-details" data-testid="device-details">
                    {move || {
                        details()
                            .into_iter()
                            .map(|(key, value)| {
                                view! {
                                    <dt>{key.clone()}</dt>
                                    <dd data-key=key>{value}</dd>
                                }
                            })
                            .collect_view()
                            .into_any()
                    }}
                </dl>
            </When>
            <When when=move || can_edit.get() && device.get().is_some()>
                <div class="pairing-bind">
                    <h3>"The sign it mirrors"</h3>
                    <Binder id=binder_id.clone() device signs />
                </div>
            </When>
        </section>
    }
    .into_any()
}

/// On a sign's page: the devices that mirror it, each online or not.
#[component]
pub fn SignDevices(sign: Memo<String>) -> impl IntoView {
    let devices = Live::new();
    devices.connect();
    devices.watch(Some("devices".into()));
    let can_edit = use_auth().can_edit();
    let ids = move || devices.records.with(|r| mirroring(r, &sign.get()));
    view! {
        <section class="panel sign-devices" data-testid="sign-devices">
            <div class="panel-head">
                <h2>"Devices"</h2>
                <A href="/devices">"All devices →"</A>
            </div>
            <ul class="sign-device-list">
                {keyed_rows(ids, move |id| view! { <SignDevice id devices can_edit /> }.into_any())}
            </ul>
            <When when=move || devices.synced.get() && ids().is_empty()>
                <p class="muted empty">"No device mirrors this sign."</p>
            </When>
        </section>
    }
    .into_any()
}

#[component]
fn SignDevice(id: String, devices: Live, can_edit: Memo<bool>) -> impl IntoView {
    let auth = use_auth();
    let device = {
        let id = id.clone();
        Memo::new(move |_| {
            devices
                .records
                .with(|r| read_device(r, &id))
                .and_then(Result::ok)
        })
    };
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let title = {
        let id = id.clone();
        move || device.with(|d| device_title(d.as_ref(), &id))
    };
    let status = move || {
        device
            .get()
            .map(|d| presence(&d))
            .unwrap_or(("offline", String::new()))
    };
    let unbind = {
        let id = id.clone();
        move |_| act(busy, error, bind(auth, id.clone(), None), |()| {})
    };
    view! {
        <li class="sign-device" data-testid="sign-device" data-device-id=id.clone()>
            <span
                class="presence"
                data-state=move || String::from(status().0)
                data-testid="device-status"
                title=move || status().1
            >
                {move || String::from(status().0)}
            </span>
            <span class="label">
                <strong>{move || title()}</strong>
                " "
                <span class="muted">{move || device.get().map(|d| d.kind.label().to_string())}</span>
            </span>
            <When when=move || can_edit.get()>
                <button
                    type="button"
                    data-testid="unbind-button"
                    disabled=move || busy.get()
                    on:click=handler(leptos::ev::click, unbind.clone())
                >
                    "Unbind"
                </button>
            </When>
            <ErrorNote error place="sign-device" />
        </li>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_asks_a_size_of_wled_only() {
        let body = pair_body(DeviceKind::Wled, " Hall ", "48", "12").expect("valid");
        assert_eq!(
            body,
            json!({"kind": "wled", "name": "Hall", "width": 48, "height": 12})
        );
        let body = pair_body(DeviceKind::Awtrix3, "Kitchen", "", "").expect("valid");
        assert_eq!(
            (body["width"].clone(), body["height"].clone()),
            (json!(32), json!(8))
        );
        assert!(
            pair_body(DeviceKind::Wled, "x", "999", "8")
                .unwrap_err()
                .starts_with("width")
        );
        assert!(
            pair_body(DeviceKind::Tasmota, "  ", "", "")
                .unwrap_err()
                .contains("Name")
        );
    }

    #[test]
    fn a_signs_devices_are_those_bound_to_it() {
        let mut records = BTreeMap::new();
        records.insert("a".to_string(), Record::loaded(json!({"sign": "lobby"})));
        records.insert("b".to_string(), Record::loaded(json!({"sign": "hall"})));
        records.insert(
            "c".to_string(),
            Record::loaded(json!({"sign": "lobby", "width": 0})),
        );
        records.insert("d".to_string(), Record::loaded(json!({})));
        assert_eq!(mirroring(&records, "lobby"), vec!["a".to_string()]);
        assert!(read_device(&records, "c").is_some_and(|d| d.is_err()));
    }

    #[test]
    fn the_simulator_command_carries_the_settings() {
        let pairing = Pairing {
            kind: DeviceKind::Marquee,
            username: "dev-1".into(),
            password: Some("secret".into()),
            prefix: "marquee/dev_1".into(),
            broker_host: "192.168.1.10".into(),
            broker_port: 1883,
            ..Pairing::default()
        };
        assert_eq!(
            device_sim_command(&pairing),
            "marquee device-sim --broker 192.168.1.10:1883 --username dev-1 --password secret \
             --prefix marquee/dev_1"
        );
        let v6 = Pairing {
            broker_host: "fe80::1".into(),
            password: None,
            ..pairing
        };
        assert!(device_sim_command(&v6).contains("--broker [fe80::1]:1883"));
        assert!(device_sim_command(&v6).contains("--password PASSWORD"));
    }

    #[test]
    fn presence_reads_as_words() {
        let mut device = Device::default();
        assert_eq!(presence(&device), ("offline", "never seen".to_string()));
        device.last_seen = Some("2026-12-06T10:00:00.000Z".into());
        assert_eq!(
            presence(&device),
            ("offline", "last seen 2026-12-06 10:00 UTC".to_string())
        );
        device.online = true;
        assert_eq!(presence(&device).0, "online");
        assert_eq!(detail_text(&json!("1.2.3.4")), "1.2.3.4");
        assert_eq!(detail_text(&json!(98)), "98");
    }
}
