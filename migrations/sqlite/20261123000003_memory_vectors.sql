-- Memory vectors: each memory's embedding (little-endian f32s) and the model that made it, so
-- vectors of different models are never compared; indexes for retention by kind and age and for
-- finding memories still to embed.
ALTER TABLE memories ADD COLUMN embedding BLOB;
ALTER TABLE memories ADD COLUMN embedding_model TEXT;
CREATE INDEX memories_kind_age ON memories (kind, created_at);
CREATE INDEX memories_model ON memories (embedding_model, id);
