-- Delivery under faults: who may speak in a conversation, and the
-- reconciler's bookkeeping for AI turns whose webhook may never come.

-- bot: the AI answers. needs_human: a turn failed for good (or the AI asked
-- for a person); the AI still answers until an agent takes over.
-- human: an agent owns the conversation; no AI turn starts. resolved: closed
-- until the customer writes again.
ALTER TABLE conversations
    ADD COLUMN state text NOT NULL DEFAULT 'bot'
        CHECK (state IN ('bot', 'needs_human', 'human', 'resolved')),
    ADD COLUMN state_changed_at timestamptz NOT NULL DEFAULT now();

-- When the reconciler last asked OpenAI about an in-flight turn.
ALTER TABLE turns ADD COLUMN checked_at timestamptz;

CREATE INDEX turns_in_flight ON turns (started_at) WHERE status = 'in_flight';
CREATE INDEX webhook_events_dead ON webhook_events (received_at) WHERE status = 'dead';
