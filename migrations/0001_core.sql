-- Core loop schema: visitors, their conversations and messages, AI turns,
-- and the webhook inbox that doubles as the worker's queue.
-- Idempotency lives in the unique keys below, not in application code.

-- A browser identity. The token itself is never stored: only its SHA-256.
CREATE TABLE visitors (
    id          uuid PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One support conversation; maps to one OpenAI Conversation.
CREATE TABLE conversations (
    id                      uuid PRIMARY KEY,
    visitor_id              uuid NOT NULL REFERENCES visitors (id) ON DELETE CASCADE,
    status                  text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    openai_conversation_id  text UNIQUE,
    -- Highest message seq handed out. Incremented under the row lock, in the
    -- same transaction as the message insert, so seqs have no gaps.
    last_seq                bigint NOT NULL DEFAULT 0,
    -- Highest customer message seq already given to an AI turn.
    ai_cursor               bigint NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- A visitor has at most one open conversation.
CREATE UNIQUE INDEX conversations_one_open_per_visitor
    ON conversations (visitor_id) WHERE status = 'open';

CREATE TABLE messages (
    id               uuid PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq              bigint NOT NULL CHECK (seq > 0),
    role             text NOT NULL CHECK (role IN ('customer', 'assistant', 'agent', 'system')),
    body             text NOT NULL,
    -- Set by the widget; a retried send with the same client_id stores nothing new.
    client_id        text CHECK (char_length(client_id) BETWEEN 1 AND 64),
    -- OpenAI's output item id: two deliveries of one response store one reply.
    openai_item_id   text UNIQUE,
    turn_id          uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, client_id)
);

-- One AI turn = one background Response. The row is also the job that starts it.
CREATE TABLE turns (
    id               uuid PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'completed', 'failed', 'cancelled', 'incomplete')),
    -- The customer messages this turn answers: seq in first_seq..=last_seq.
    first_seq        bigint NOT NULL,
    last_seq         bigint NOT NULL,
    response_id      text UNIQUE,
    attempts         integer NOT NULL DEFAULT 0,
    -- While set in the future, one worker owns the start of this turn.
    claimed_until    timestamptz,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CHECK (first_seq <= last_seq)
);

-- At most one AI turn in flight per conversation; later messages wait for the next.
CREATE UNIQUE INDEX turns_one_active_per_conversation
    ON turns (conversation_id) WHERE status IN ('pending', 'in_flight');
CREATE INDEX turns_pending ON turns (next_attempt_at) WHERE status = 'pending';

-- Every verified webhook delivery, keyed by its webhook-id: a redelivery is a no-op.
-- Rows with status 'pending' are the worker's queue.
CREATE TABLE webhook_events (
    webhook_id       text PRIMARY KEY,
    event_id         text,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processed', 'ignored', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    last_error       text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz
);

CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE status = 'pending';
