-- Search (issue 15): the original names of a message's files are part of its full text
-- document ("invoice" finds the message holding invoice-march.pdf) and of the user's
-- vocabulary (a typo in a name is corrected too), however the file got there: a send
-- claiming it (socket, REST, a voice upload with memoryId), WhatsApp media stored on its
-- message, or a file row that goes away (then its name stops matching).
--
-- The embedding of a message stays that of its content: a name is often a device's
-- (IMG_2034.jpg, media.jpg) and says little about meaning, and the text ranking (fused
-- into hybrid) already finds it, typos included. So nothing here queues an embedding.

-- The names of the user's files held by a message, oldest first (NULL when none).
CREATE FUNCTION memoryd_message_file_names(owner UUID, msg UUID) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT string_agg(original_filename, ' ' ORDER BY created_at, id) FROM files
    WHERE message_id = msg AND user_id = owner
$$;

-- Message content C, with `metadata.searchText` and its files' names. A name goes in
-- twice: as it is (the parser reads `invoice-march.pdf` as one file token, which a query
-- of the whole name matches) and cut at every non-letter (`invoice march pdf`, which a
-- query of a word of it matches). A new row has no files yet (they reference it), so the
-- files are only read on an update, never on the hot path of a send.
CREATE OR REPLACE FUNCTION memoryd_message_search() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cfg regconfig := (SELECT memoryd_ts_config(language) FROM users WHERE id = NEW.user_id);
    names TEXT;
BEGIN
    cfg := coalesce(cfg, 'simple'::regconfig);
    IF TG_OP = 'UPDATE' THEN
        names := memoryd_message_file_names(NEW.user_id, NEW.id);
    END IF;
    NEW.search_tsv := setweight(to_tsvector(cfg, concat_ws(' ', NEW.content,
        CASE WHEN jsonb_typeof(NEW.metadata) = 'object' THEN NEW.metadata ->> 'searchText' END,
        names, regexp_replace(names, '[^[:alnum:]]+', ' ', 'g'))), 'C');
    RETURN NEW;
END $$;

-- `UPDATE messages SET search_tsv = NULL` (what the files trigger below does) recomputes
-- the vector and fires nothing else: not the vocabulary trigger, not the embedding one,
-- and `updated_at` stays (it is no edit).
DROP TRIGGER messages_search ON messages;
CREATE TRIGGER messages_search BEFORE INSERT OR UPDATE OF content, metadata, search_tsv
    ON messages FOR EACH ROW EXECUTE FUNCTION memoryd_message_search();

-- Words in a fixed order, so that two transactions adding words of one user wait for each
-- other (the unique index) in one order, never in a cycle.
CREATE OR REPLACE FUNCTION memoryd_add_words(owner UUID, body TEXT) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO search_words (user_id, word)
    SELECT DISTINCT owner, w FROM regexp_split_to_table(lower(coalesce(body, '')), '[^[:alnum:]]+') w
    WHERE length(w) BETWEEN 3 AND 40
    ORDER BY 2
    ON CONFLICT DO NOTHING
$$;

-- A file's name joins the vocabulary when the row is stored (the upload's own transaction,
-- or the WhatsApp media one), not when a send claims it: a send then adds new words in one
-- statement only (its content's), as before, and so takes no new lock order. Words stay
-- after a delete, as for messages (0005).
CREATE FUNCTION memoryd_words_of_file() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM memoryd_add_words(NEW.user_id, NEW.original_filename);
    RETURN NEW;
END $$;
CREATE TRIGGER files_words AFTER INSERT OR UPDATE OF original_filename
    ON files FOR EACH ROW EXECUTE FUNCTION memoryd_words_of_file();

-- A file attached, moved, renamed or deleted: the vector of each message concerned is
-- recomputed. Lock order: a send claims files after inserting its message, so the message
-- row is its own already; WhatsApp media lock the message here one statement before they
-- would anyway (`FileStore.add_media` updates it next); a message or memory delete takes
-- these rows anyway (and a message already deleted matches no row here).
CREATE FUNCTION memoryd_file_message_search() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    touched UUID[] := '{}';
BEGIN
    IF TG_OP <> 'INSERT' THEN
        touched := touched || OLD.message_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        touched := touched || NEW.message_id;
    END IF;
    UPDATE messages SET search_tsv = NULL WHERE id = ANY(touched);
    RETURN NULL;
END $$;
CREATE TRIGGER files_message_search
    AFTER INSERT OR DELETE OR UPDATE OF message_id, original_filename
    ON files FOR EACH ROW EXECUTE FUNCTION memoryd_file_message_search();

SELECT memoryd_add_words(user_id, original_filename) FROM files;
UPDATE messages SET search_tsv = NULL
WHERE id IN (SELECT message_id FROM files WHERE message_id IS NOT NULL);
