-- One lock order for every write of a user's messages (issue 14), so that concurrent
-- sends, edits and deletes of one user never deadlock:
--   the memory row (or the message row of an edit), then the user's vocabulary rows in
--   word order, then the document's embedding-queue row (and, until 0009, the user's
--   `search.embed` job row), then the event head last.
-- 0005 ran the vocabulary and embedding-queue triggers AFTER the row: in the one-statement
-- send (a data-modifying CTE, whose AFTER triggers fire at the end of the statement) they
-- came after the event head, on the transaction path before it. As BEFORE triggers they
-- come with the row itself on both paths. They only write other tables, so running them
-- before the row is stored changes nothing else: a failing insert rolls them back too.

-- (Words in a fixed order, so that two writes sharing new words wait for each other and
-- never in a circle: `memoryd_add_words` sorts them since 0007.)

DROP TRIGGER messages_words ON messages;
CREATE TRIGGER messages_words BEFORE INSERT OR UPDATE OF content
    ON messages FOR EACH ROW EXECUTE FUNCTION memoryd_words_of_message();

DROP TRIGGER messages_embedding ON messages;
CREATE TRIGGER messages_embedding BEFORE INSERT OR UPDATE OF content
    ON messages FOR EACH ROW EXECUTE FUNCTION memoryd_message_embedding();
CREATE TRIGGER messages_embedding_gone AFTER DELETE
    ON messages FOR EACH ROW EXECUTE FUNCTION memoryd_message_embedding();
