-- A local post names its mentions in the row itself (a JSON array of handles), and a trigger
-- indexes them, so a post and its mentions are one statement: before, a post that named anyone
-- was a transaction of two inserts, four round trips to the database. Rows stored before keep
-- their index rows; their column stays NULL.
ALTER TABLE local_posts ADD COLUMN mentions TEXT;

CREATE FUNCTION local_posts_mentions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO local_mentions (handle, post_id)
    SELECT DISTINCT handle, NEW.id FROM jsonb_array_elements_text(NEW.mentions::jsonb) AS handle
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER local_posts_mentions AFTER INSERT ON local_posts
FOR EACH ROW WHEN (NEW.mentions IS NOT NULL)
EXECUTE FUNCTION local_posts_mentions();
