-- Operations: trace a webhook event back to the HTTP request that brought
-- it, and let the retention job find old events without a full scan.

-- The x-request-id of the delivery that recorded the event; the worker
-- logs it with everything it does for the event.
ALTER TABLE webhook_events ADD COLUMN request_id text;

-- The retention job deletes finished events by age.
CREATE INDEX webhook_events_received ON webhook_events (received_at)
    WHERE status IN ('processed', 'ignored', 'dead');
