-- A local post's parent is checked by this trigger instead of in the post's insert. The insert
-- read local_posts in its own SELECT (`WHERE … EXISTS (SELECT 1 FROM local_posts …)`), which made
-- SQLite copy each new row into a temporary table before inserting it: twice a reply (the mention
-- and the reply). A post replying to no post is skipped as before: RAISE(IGNORE) drops the row,
-- nothing is inserted and RETURNING returns nothing. Postgres keeps the check in its insert.
CREATE TRIGGER local_posts_parent BEFORE INSERT ON local_posts
WHEN NEW.reply_to IS NOT NULL AND NOT EXISTS (SELECT 1 FROM local_posts WHERE id = NEW.reply_to)
BEGIN
    SELECT RAISE(IGNORE);
END;
