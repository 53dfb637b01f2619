// Memory search, in one place: GET /api/search, which looks in what was said in every
// thread (full text in the user's language, typos tolerated, and by meaning when the
// server has an embedder). Callers get the matching memories, best first; each carries
// `matches`, the messages that matched ({id, seq, snippet}), for the list to show.
export async function searchMemories(client, query, { categoryId, favorites, isFavorite } = {}) {
  const body = await client.api("/api/search", {
    query: { q: query, categoryId, limit: 50 },
  });
  const memories = body.results.map((r) => ({ ...r.memory, matches: r.messages || [] }));
  return favorites || isFavorite ? memories.filter((m) => m.isFavorite) : memories;
}
