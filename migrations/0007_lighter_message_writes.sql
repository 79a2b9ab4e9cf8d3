-- Every message writes its conversation's row (its seqs, updated_at) and
-- every turn writes it again (the AI cursor). Index none of those columns,
-- and leave room on each page, so that those updates are HOT (no new index
-- entries, BENCHMARKS.md). The console's list sorts by
-- (state = 'needs_human', updated_at) after filtering, which this index on
-- state alone serves as well as the old one did.
DROP INDEX conversations_state;
CREATE INDEX conversations_state ON conversations (state);
ALTER TABLE conversations SET (fillfactor = 80);

-- No query reads it: the console's search is a case-insensitive substring
-- match (ILIKE), which a tsvector index cannot answer. Every message paid
-- for it.
DROP INDEX messages_body_search;

-- Only messages that have a client_id (the customer's) or an OpenAI item
-- id (the AI's) can collide on one; NULL keys never do, so index only the
-- rows that have one. Appends' ON CONFLICT DO NOTHING names no index and
-- covers these as it covered the constraints.
CREATE UNIQUE INDEX messages_client_id ON messages (conversation_id, client_id)
    WHERE client_id IS NOT NULL;
ALTER TABLE messages DROP CONSTRAINT messages_conversation_id_client_id_key;
CREATE UNIQUE INDEX messages_openai_item_id ON messages (openai_item_id)
    WHERE openai_item_id IS NOT NULL;
ALTER TABLE messages DROP CONSTRAINT messages_openai_item_id_key;
