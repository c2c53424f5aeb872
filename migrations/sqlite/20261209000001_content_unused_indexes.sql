-- No query reads content_items by (persona, platform, created_at) or by measure_at alone: the
-- admin's list filters with "($n IS NULL OR persona = $n)", which no index serves, and the
-- engagement round's query (stage 'published', a published_at range, measure_at due) is served
-- by content_items_stage. Each index only cost a write in every reply's enqueue transaction.
DROP INDEX content_items_persona;
DROP INDEX content_items_measure;
