-- The engagement round (each minute) reads the items published within its window. Through
-- content_items_stage it walked every item ever published and sorted the ones in the window, a
-- round's cost growing with the service's history; this index holds the published items by
-- publish time, so a round reads its window alone. Only the publish writes it (one entry an
-- item).
CREATE INDEX content_items_published ON content_items (published_at) WHERE stage = 'published';
