-- A local post names its mentions in the row itself (a JSON array of handles), and a trigger
-- indexes them, so a post and its mentions are one statement: before, a post that named anyone
-- was a transaction of two inserts, four round trips to the database's thread. Rows stored
-- before keep their index rows; their column stays NULL.
ALTER TABLE local_posts ADD COLUMN mentions TEXT;

CREATE TRIGGER local_posts_mentions AFTER INSERT ON local_posts
WHEN NEW.mentions IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO local_mentions (handle, post_id)
    SELECT value, NEW.id FROM json_each(NEW.mentions);
END;
