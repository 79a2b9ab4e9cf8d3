-- Agents, and a transcript that holds more than the customer sees.

CREATE TABLE agents (
    id             uuid PRIMARY KEY,
    email          text NOT NULL,
    name           text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- Argon2id, PHC string format.
    password_hash  text NOT NULL,
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX agents_email ON agents (lower(email));

-- Failed logins, for throttling per account and per address.
CREATE TABLE login_failures (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL,
    ip         text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email ON login_failures (lower(email), failed_at);
CREATE INDEX login_failures_ip ON login_failures (ip, failed_at);

-- Every transcript item has an agent_seq (1, 2, 3, … per conversation, no
-- gaps): what agents see. Items the customer sees also have a seq in the
-- customer's own gap-free numbering; internal items (notes, state changes,
-- AI output that arrived after a takeover) have none.
ALTER TABLE conversations ADD COLUMN last_agent_seq bigint NOT NULL DEFAULT 0;
UPDATE conversations SET last_agent_seq = last_seq;

ALTER TABLE messages
    ADD COLUMN agent_seq bigint,
    ADD COLUMN internal boolean NOT NULL DEFAULT false,
    ADD COLUMN author_agent_id uuid REFERENCES agents (id),
    -- The agent's name when they wrote it, as the customer saw it.
    ADD COLUMN author_name text,
    -- For role 'event': {"from": …, "to": …, "reason": …}.
    ADD COLUMN event jsonb;
UPDATE messages SET agent_seq = seq;
ALTER TABLE messages
    ALTER COLUMN agent_seq SET NOT NULL,
    ALTER COLUMN seq DROP NOT NULL,
    ADD CONSTRAINT messages_agent_seq UNIQUE (conversation_id, agent_seq),
    ADD CONSTRAINT messages_internal_has_no_seq CHECK (internal = (seq IS NULL)),
    DROP CONSTRAINT messages_role_check,
    ADD CONSTRAINT messages_role_check
        CHECK (role IN ('customer', 'assistant', 'agent', 'system', 'note', 'event'));

-- How many customer messages each agent has read, per conversation.
CREATE TABLE agent_reads (
    agent_id         uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    read_agent_seq   bigint NOT NULL,
    PRIMARY KEY (agent_id, conversation_id)
);

CREATE INDEX messages_body_search ON messages USING gin (to_tsvector('simple', body));
CREATE INDEX conversations_state ON conversations (state, updated_at DESC);
