//! SUBSCRIBE and UNSUBSCRIBE: routing filters to the session's feed (or its
//! shared subscriptions' groups), retained backfills, and saving the session.

use super::*;

impl<W: AsyncWrite + Unpin + Send> Connection<W> {
    pub(super) async fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), End> {
        let limits = self.broker.limits().clone();
        let mut codes = Vec::with_capacity(subscribe.subscriptions.len());
        let mut fillings = Vec::new();
        for request in subscribe.subscriptions {
            let (share, text) = match split_share(&request.filter) {
                Ok(parts) => parts,
                Err(()) => {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            let filter = match TopicFilter::parse(text) {
                Ok(f) if check_levels(text, &limits).is_ok() => f,
                _ => {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            if share.is_some() && request.options.no_local {
                return Err(End::Refused(
                    ReasonCode::ProtocolError,
                    "No Local on a shared subscription [MQTT-3.8.3-4]".into(),
                ));
            }
            let is_new = !self.session.subscriptions.contains_key(&request.filter);
            if is_new && self.session.subscriptions.len() >= limits.max_subscriptions {
                codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            if !self.allows(Action::Subscribe, text) {
                self.report_refusal(RefusedAction::Subscribe {
                    filter: text.to_owned(),
                });
                codes.push(ReasonCode::NotAuthorized);
                continue;
            }
            let options = request.options;
            // Shared subscriptions get no retained messages [MQTT-4.8.2].
            let send_retained = share.is_none()
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNewSubscription => is_new,
                    RetainHandling::DoNotSend => false,
                };
            if share.is_some() {
                // Its messages come from the group, never from the feed.
                self.broker.shares().join(
                    &request.filter,
                    &filter,
                    &self.client_id,
                    &self.session.shared,
                );
            }
            self.session.subscriptions.insert(
                request.filter.clone(),
                Subscription {
                    filter: filter.clone(),
                    share: share.map(str::to_owned),
                    qos: options.qos,
                    no_local: options.no_local,
                    retain_as_published: options.retain_as_published,
                    id: subscribe.properties.subscription_identifier,
                },
            );
            if share.is_none() {
                fillings.push((filter, send_retained.then(|| request.filter.clone())));
            }
            codes.push(match options.qos {
                QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
        }
        // Every new filter is on the bus before anything here waits, so a
        // message published once this SUBSCRIBE is read reaches it.
        if !fillings.is_empty() {
            let store = self.broker.store().clone();
            let feed = self.session.feed.get_or_insert_with(|| Feed::new(store));
            for (filter, _) in &fillings {
                for (bus_filter, _) in topics::bus_filters(filter) {
                    feed.listen(&bus_filter);
                }
            }
        }
        // A persistent session's subscriptions are durable before SUBACK.
        self.save_session().await;
        // SUBACK goes before the retained messages it brings [MQTT-3.8.4-4].
        self.send(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reason_codes: codes,
            properties: AckProperties::default(),
        }));
        for (filter, retained_for) in fillings {
            let start = match retained_for {
                Some(_) => Start::State,
                None => Start::Since(self.broker.store().last_seq()),
            };
            self.begin(&filter, start, retained_for).await?;
        }
        Ok(())
    }

    /// Routes `filter` to this session's feed, queueing its backfill.
    pub(super) async fn begin(
        &mut self,
        filter: &TopicFilter,
        start: Start,
        retained_for: Option<String>,
    ) -> Result<(), End> {
        let store = self.broker.store().clone();
        let feed = self.session.feed.get_or_insert_with(|| Feed::new(store));
        let bus_filters = topics::bus_filters(filter);
        // On the bus for every topic the filter matches before any backfill
        // read waits: what is published from here on is the client's.
        for (bus_filter, _) in &bus_filters {
            feed.listen(bus_filter);
        }
        for (bus_filter, carrier) in bus_filters {
            let backfill = match feed.begin(bus_filter.clone(), start).await {
                Ok(backfill) => backfill,
                Err(StoreError::ResumeGap { .. }) => feed
                    .begin(bus_filter, Start::State)
                    .await
                    .map_err(store_failure)?,
                Err(e) => return Err(store_failure(e)),
            };
            self.session.backfills.push_back(Filling {
                backfill,
                carrier,
                retained_for: retained_for.clone(),
            });
        }
        Ok(())
    }

    /// Keeps a persistent session's state in the store (or forgets one that
    /// ends with its connection).
    pub(super) fn save_session(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let state = (self.session.expiry > 0)
            .then(|| serde_json::to_vec(&self.session.saved()).ok())
            .flatten();
        // Sessions that never were persistent cost no write.
        let needed = state.is_some() || self.session.stored;
        self.session.stored = state.is_some();
        let store = self.broker.store().clone();
        let client_id = self.client_id.clone();
        async move {
            if !needed {
                return;
            }
            if let Err(e) = store.save_session(&client_id, state).await {
                tracing::warn!(%client_id, "cannot save the session: {e}");
            }
        }
    }

    pub(super) async fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            match self.session.subscriptions.remove(filter) {
                Some(subscription) if subscription.share.is_some() => {
                    // What the client has in hand it keeps; the rest goes back.
                    let returned = self.session.take_shared(Some(filter), false);
                    self.broker
                        .shares()
                        .leave(filter, &self.client_id, returned);
                    codes.push(ReasonCode::Success);
                }
                Some(subscription) => {
                    if let Some(feed) = &mut self.session.feed {
                        for (bus_filter, _) in topics::bus_filters(&subscription.filter) {
                            feed.remove(&bus_filter);
                        }
                    }
                    self.session
                        .pending
                        .retain(|d| d.retained_for.as_deref() != Some(filter.as_str()));
                    codes.push(ReasonCode::Success);
                }
                None => codes.push(ReasonCode::NoSubscriptionExisted),
            }
        }
        self.save_session().await;
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            reason_codes: codes,
            properties: AckProperties::default(),
        }));
    }

    /// After a cut-off: a new feed that replays, from the change log, what the
    /// client has not seen (or the current state, if the log no longer reaches).
    pub(super) async fn rebuild_feed(&mut self) -> Result<(), End> {
        let position = self.session.position();
        self.session.feed = None;
        self.session.backfills.clear();
        self.session.lagged = false;
        let filters: Vec<TopicFilter> = self
            .session
            .subscriptions
            .values()
            .filter(|s| s.share.is_none())
            .map(|s| s.filter.clone())
            .collect();
        for filter in filters {
            self.begin(&filter, Start::Since(position), None).await?;
        }
        Ok(())
    }
}

/// Splits `$share/{group}/{filter}` into the group and the filter.
pub(super) fn split_share(filter: &str) -> Result<(Option<&str>, &str), ()> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok((None, filter));
    };
    match rest.split_once('/') {
        Some((group, filter))
            if !group.is_empty() && !group.contains(['+', '#']) && !filter.is_empty() =>
        {
            Ok((Some(group), filter))
        }
        _ => Err(()),
    }
}
