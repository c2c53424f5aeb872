-- The local platform's index of mentions is a key and nothing else: stored as the key itself
-- (WITHOUT ROWID), each mention is one B-tree insert where it was two (the rows and the key's
-- index). Reads are by handle, in post order, which the key serves as before. The trigger that
-- fills it names the table, so it is made again after the table.
DROP TRIGGER local_posts_mentions;
CREATE TABLE local_mentions_new (
    handle  TEXT    NOT NULL,
    post_id INTEGER NOT NULL,
    PRIMARY KEY (handle, post_id)
) WITHOUT ROWID;
INSERT INTO local_mentions_new (handle, post_id) SELECT handle, post_id FROM local_mentions;
DROP TABLE local_mentions;
ALTER TABLE local_mentions_new RENAME TO local_mentions;
CREATE TRIGGER local_posts_mentions AFTER INSERT ON local_posts
WHEN NEW.mentions IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO local_mentions (handle, post_id)
    SELECT value, NEW.id FROM json_each(NEW.mentions);
END;
