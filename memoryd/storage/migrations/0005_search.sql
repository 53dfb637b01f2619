-- Search (issue 15): weighted full text vectors on memories and messages and each user's
-- vocabulary for typos, kept by triggers so that every write path (sends, edits, Memo, WhatsApp,
-- deletes) is indexed in its own transaction with no call from the code; and the queue
-- of documents whose embedding is stale, swept by the durable `search.embed` job.
-- Nothing here needs pgvector: the vector table is created at start-up, where the
-- extension exists (memoryd/storage/search_vectors.py).

-- The text search configuration of a user's `language` ('en', 'fr-CA', 'german', ...);
-- `simple` (no stemming, no stop words) for a language PostgreSQL has no configuration
-- for, so that any text is still searchable.
CREATE FUNCTION memoryd_ts_config(lang TEXT) RETURNS regconfig
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        (SELECT c.oid::regconfig FROM pg_ts_config c
         JOIN pg_namespace n ON n.oid = c.cfgnamespace AND n.nspname = 'pg_catalog'
         WHERE c.cfgname = CASE lower(split_part(coalesce(lang, ''), '-', 1))
             WHEN 'ar' THEN 'arabic' WHEN 'hy' THEN 'armenian' WHEN 'eu' THEN 'basque'
             WHEN 'ca' THEN 'catalan' WHEN 'da' THEN 'danish' WHEN 'nl' THEN 'dutch'
             WHEN 'en' THEN 'english' WHEN 'fi' THEN 'finnish' WHEN 'fr' THEN 'french'
             WHEN 'de' THEN 'german' WHEN 'el' THEN 'greek' WHEN 'hi' THEN 'hindi'
             WHEN 'hu' THEN 'hungarian' WHEN 'id' THEN 'indonesian' WHEN 'ga' THEN 'irish'
             WHEN 'it' THEN 'italian' WHEN 'lt' THEN 'lithuanian' WHEN 'ne' THEN 'nepali'
             WHEN 'no' THEN 'norwegian' WHEN 'nb' THEN 'norwegian' WHEN 'nn' THEN 'norwegian'
             WHEN 'pt' THEN 'portuguese' WHEN 'ro' THEN 'romanian' WHEN 'ru' THEN 'russian'
             WHEN 'sr' THEN 'serbian' WHEN 'es' THEN 'spanish' WHEN 'sv' THEN 'swedish'
             WHEN 'ta' THEN 'tamil' WHEN 'tr' THEN 'turkish' WHEN 'yi' THEN 'yiddish'
             ELSE lower(lang) END),
        'simple'::regconfig)
$$;

-- The strings (and numbers) inside a memory's JSON `content`, without its keys.
CREATE FUNCTION memoryd_json_text(doc JSONB) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT string_agg(v #>> '{}', ' ') FROM jsonb_path_query(doc, 'strict $.**') AS v
    WHERE jsonb_typeof(v) IN ('string', 'number')
$$;

ALTER TABLE memories ADD COLUMN search_tsv TSVECTOR, ADD COLUMN search_text TEXT;
ALTER TABLE messages ADD COLUMN search_tsv TSVECTOR;

-- Title A, description and tags B, content C; `search_text` is the same text for trigrams.
CREATE FUNCTION memoryd_memory_search() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cfg regconfig := (SELECT memoryd_ts_config(language) FROM users WHERE id = NEW.user_id);
    body TEXT := coalesce(memoryd_json_text(NEW.content), '');
    about TEXT := concat_ws(' ', NEW.description, array_to_string(NEW.tags, ' '));
BEGIN
    cfg := coalesce(cfg, 'simple'::regconfig);
    NEW.search_tsv := setweight(to_tsvector(cfg, coalesce(NEW.title, '')), 'A')
        || setweight(to_tsvector(cfg, about), 'B') || setweight(to_tsvector(cfg, body), 'C');
    NEW.search_text := concat_ws(' ', NEW.title, about, body);
    RETURN NEW;
END $$;

-- Message content C (a memory's own text outranks a message saying the same);
-- a transcript or a file name kept in `metadata.searchText` joins it once those exist.
CREATE FUNCTION memoryd_message_search() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cfg regconfig := (SELECT memoryd_ts_config(language) FROM users WHERE id = NEW.user_id);
BEGIN
    cfg := coalesce(cfg, 'simple'::regconfig);
    NEW.search_tsv := setweight(to_tsvector(cfg, concat_ws(' ', NEW.content,
        CASE WHEN jsonb_typeof(NEW.metadata) = 'object' THEN NEW.metadata ->> 'searchText' END)),
        'C');
    RETURN NEW;
END $$;

CREATE TRIGGER memories_search BEFORE INSERT OR UPDATE OF title, description, tags, content
    ON memories FOR EACH ROW EXECUTE FUNCTION memoryd_memory_search();
CREATE TRIGGER messages_search BEFORE INSERT OR UPDATE OF content, metadata
    ON messages FOR EACH ROW EXECUTE FUNCTION memoryd_message_search();

UPDATE memories SET title = title;
UPDATE messages SET content = content;

CREATE INDEX idx_memories_search ON memories USING GIN (search_tsv);
-- A user's search must not read every user's matches: with btree_gin (a contrib module
-- like pg_trgm) the user id is the first column of the GIN index, so the index scan
-- returns only the user's rows. Without it (or without the right to create it) the
-- index is on the text alone, and the user filter is applied to its matches.
DO $$
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS btree_gin;
        CREATE INDEX idx_messages_search ON messages USING GIN (user_id, search_tsv);
    EXCEPTION WHEN undefined_file OR insufficient_privilege OR feature_not_supported THEN
        RAISE NOTICE 'btree_gin is not available: search indexes without the user id';
        CREATE INDEX idx_messages_search ON messages USING GIN (search_tsv);
    END;
END $$;

-- Each user's vocabulary: the words they wrote (3 to 40 letters, lower case), with a
-- trigram index. A typo in a query ("castel") is corrected against the user's own words
-- ("castle"), then searched by full text: far cheaper than comparing the query with every
-- message, and no other user's words are ever suggested. Words stay after a delete (they
-- only widen a query; what matches is still the user's current messages).
CREATE TABLE search_words (
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    word TEXT NOT NULL,
    PRIMARY KEY (user_id, word)
);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'btree_gin') THEN
        CREATE INDEX idx_search_words_trgm ON search_words USING GIN (user_id, word gin_trgm_ops);
    ELSE
        CREATE INDEX idx_search_words_trgm ON search_words USING GIN (word gin_trgm_ops);
    END IF;
END $$;

CREATE FUNCTION memoryd_add_words(owner UUID, body TEXT) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO search_words (user_id, word)
    SELECT DISTINCT owner, w FROM regexp_split_to_table(lower(coalesce(body, '')), '[^[:alnum:]]+') w
    WHERE length(w) BETWEEN 3 AND 40
    ON CONFLICT DO NOTHING
$$;

CREATE FUNCTION memoryd_words_of_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM memoryd_add_words(NEW.user_id, NEW.content);
    RETURN NEW;
END $$;

CREATE FUNCTION memoryd_words_of_memory() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM memoryd_add_words(NEW.user_id, NEW.search_text);
    RETURN NEW;
END $$;

CREATE TRIGGER messages_words AFTER INSERT OR UPDATE OF content
    ON messages FOR EACH ROW EXECUTE FUNCTION memoryd_words_of_message();
CREATE TRIGGER memories_words AFTER INSERT OR UPDATE OF title, description, tags, content
    ON memories FOR EACH ROW EXECUTE FUNCTION memoryd_words_of_memory();

SELECT memoryd_add_words(user_id, content) FROM messages;
SELECT memoryd_add_words(user_id, search_text) FROM memories;

-- Embeddings. `search_state.embed` is switched on at start-up by a node that has an
-- embedder and a vector store; while it is off nothing is queued.
CREATE TABLE search_state (
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    embed BOOLEAN NOT NULL DEFAULT FALSE,
    model TEXT,           -- the embedder model and dimension the index was built with
    dimension INTEGER,
    store TEXT
);
INSERT INTO search_state DEFAULT VALUES;

-- A document (`msg:<uuid>` or `mem:<uuid>`) whose vector is stale: new, edited or deleted.
-- A semantic hit on a queued document is left out until it is embedded again.
CREATE TABLE search_embed_queue (
    doc_id TEXT PRIMARY KEY,
    user_id UUID NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    queued_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX idx_search_embed_queue_user ON search_embed_queue (user_id, queued_at);

-- `memory reindex` runs, so that an interrupted one resumes instead of starting over.
CREATE TABLE search_reindex_runs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id) ON DELETE CASCADE,  -- NULL: every user
    total INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);

-- Queue the document and make sure its user's `search.embed` job will run: one job row
-- per user (its dedupe key), back to pending when it had finished, and its `gen` bumped,
-- so that a job finishing at this moment sees it has more to do (see handlers/search_jobs).
CREATE FUNCTION memoryd_queue_embedding(doc TEXT, owner UUID, gone BOOLEAN) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT embed FROM search_state) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM users WHERE id = owner) THEN
        RETURN;  -- the user is being deleted: its rows (and vectors) go with it
    END IF;
    INSERT INTO search_embed_queue (doc_id, user_id, deleted) VALUES (doc, owner, gone)
    ON CONFLICT (doc_id) DO UPDATE SET deleted = EXCLUDED.deleted,
        queued_at = EXCLUDED.queued_at;
    INSERT INTO jobs (kind, user_id, dedupe_key, payload, max_attempts)
    VALUES ('search.embed', owner, 'search.embed:' || owner, '{"gen": 1}', 1000000)
    ON CONFLICT (kind, dedupe_key) WHERE dedupe_key IS NOT NULL DO UPDATE SET
        payload = jsonb_build_object('gen', coalesce((jobs.payload ->> 'gen')::bigint, 0) + 1),
        status = CASE WHEN jobs.status = 'running' THEN 'running' ELSE 'pending' END,
        attempts = CASE WHEN jobs.status = 'running' THEN jobs.attempts ELSE 0 END,
        run_after = CASE WHEN jobs.status = 'running' THEN jobs.run_after ELSE now() END,
        updated_at = now();
END $$;

CREATE FUNCTION memoryd_message_embedding() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM memoryd_queue_embedding('msg:' || OLD.id, OLD.user_id, TRUE);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.content IS NOT DISTINCT FROM OLD.content THEN
        RETURN NEW;
    END IF;
    PERFORM memoryd_queue_embedding('msg:' || NEW.id, NEW.user_id, FALSE);
    RETURN NEW;
END $$;

CREATE FUNCTION memoryd_memory_embedding() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM memoryd_queue_embedding('mem:' || OLD.id, OLD.user_id, TRUE);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.search_text IS NOT DISTINCT FROM OLD.search_text THEN
        RETURN NEW;
    END IF;
    PERFORM memoryd_queue_embedding('mem:' || NEW.id, NEW.user_id, FALSE);
    RETURN NEW;
END $$;

CREATE TRIGGER messages_embedding AFTER INSERT OR UPDATE OF content OR DELETE
    ON messages FOR EACH ROW EXECUTE FUNCTION memoryd_message_embedding();
CREATE TRIGGER memories_embedding
    AFTER INSERT OR UPDATE OF title, description, tags, content OR DELETE
    ON memories FOR EACH ROW EXECUTE FUNCTION memoryd_memory_embedding();
