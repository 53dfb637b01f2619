// Memory search, in one place. Today it is the list API's substring match,
// GET /api/memories?search=. When GET /api/search lands (issue 15), only this function
// changes: callers need the matching memories, best first.
export async function searchMemories(client, query, { categoryId, isFavorite } = {}) {
  const body = await client.api("/api/memories", {
    query: { search: query, categoryId, isFavorite: isFavorite ? "true" : undefined, limit: 50 },
  });
  return body.memories;
}
