-- The queue tables are updated in place by every claim (a lease and an
-- attempt count, no indexed column): leave room on each page so that those
-- updates can be HOT (no new index entries) instead of moving the row.
ALTER TABLE webhook_events SET (fillfactor = 80);
ALTER TABLE turns SET (fillfactor = 80);
