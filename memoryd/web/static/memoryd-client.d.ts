// TypeScript declarations for memoryd-client.js (memoryd wire protocol v1, JSON).
// Served at /memoryd-client.d.ts next to the module; docs/protocol.md is the contract.

export declare const PROTOCOL: "memoryd.v1.json";
export declare const VERSION: string;

export type Uuid = string;
export type Timestamp = string; // RFC 3339, UTC
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Memory {
  id: Uuid;
  userId: Uuid;
  categoryId: Uuid | null;
  title: string | null;
  description: string | null;
  content: Json;
  tags: string[];
  metadata: Json;
  isFavorite: boolean;
  isArchived: boolean;
  privacyLevel: "private" | "shared" | "public";
  lastMessageSeq: number;
  lastReadSeq: number;
  messageCount: number;
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

export type MessageStatus = "pending" | "sent" | "delivered" | "read" | "failed" | "cancelled";

export interface Message {
  id: Uuid;
  memoryId: Uuid;
  userId: Uuid;
  seq: number;
  clientMsgId: string | null;
  content: string;
  messageType: "text" | "voice" | "image" | "document";
  metadata: Json;
  attachments: string[];
  isAiGenerated: boolean;
  parentId: Uuid | null;
  status: MessageStatus;
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

export interface Category {
  id: Uuid;
  userId: Uuid;
  name: string;
  description: string | null;
  icon: string | null;
  color: string | null;
  isDefault: boolean;
  sortOrder: number;
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

export interface User {
  id: Uuid;
  email: string;
  username: string | null;
  firstName: string;
  lastName: string;
  avatarUrl: string | null;
  phoneNumber: string | null;
  timezone: string;
  language: string;
  themePreference: string;
  role: "user" | "premium" | "admin";
  isVerified: boolean;
  isActive: boolean;
  lastLoginAt: Timestamp | null;
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

export interface Limits {
  maxFrameBytes: number;
  maxContentChars: number;
  maxQueue: number;
  requestsPerSecond: number;
  requestBurst: number;
  maxSocketsPerUser: number;
}

export interface Welcome {
  type: "welcome";
  userId: Uuid;
  deviceId: Uuid;
  sessionId: Uuid;
  headSeq: number;
  heartbeat: number;
  limits: Limits;
  resync?: true;
}

export interface Deletion {
  id: Uuid;
  memoryId: Uuid | null;
}

export interface EventPayloads {
  "memory.created": Memory;
  "memory.updated": Memory;
  "memory.deleted": Deletion;
  "memory.read": { memoryId: Uuid; seq: number };
  "category.created": Category;
  "category.updated": Category;
  "category.deleted": Deletion;
  "message.created": Message;
  "message.updated": Message;
  "message.deleted": Deletion;
  "user.updated": User;
}

export type ServerEvent = {
  [K in keyof EventPayloads]: { seq: number; event: K; data: EventPayloads[K] };
}[keyof EventPayloads];

export interface SignalPayloads {
  typing: { memoryId: Uuid; deviceId: Uuid; userId: Uuid };
  presence: { deviceId: Uuid; online: boolean };
  "ai.delta": { memoryId: Uuid; replyTo: Uuid; index: number; delta: string };
}

export type ServerSignal = {
  [K in keyof SignalPayloads]: { signal: K; data: SignalPayloads[K] };
}[keyof SignalPayloads];

export interface Pagination {
  page: number;
  limit: number;
  total: number;
  totalPages: number;
}

export interface MemoryFields {
  title?: string | null;
  description?: string | null;
  categoryId?: Uuid | null;
  content?: Json;
  metadata?: Json;
  tags?: string[] | null;
  isFavorite?: boolean;
  isArchived?: boolean;
  privacyLevel?: "private" | "shared" | "public";
}

export interface CategoryFields {
  name?: string;
  description?: string | null;
  icon?: string | null;
  color?: string | null;
  sortOrder?: number;
}

export interface SendFields {
  memoryId: Uuid;
  clientMsgId: string;
  content: string;
  messageType?: Message["messageType"];
  attachments?: Uuid[];
  metadata?: Json;
  parentId?: Uuid | null;
  ai?: boolean;
}

/** Every request of protocol v1: its parameters (without type and id) and its reply. */
export interface Requests {
  ping: [{}, { pong: true; time: Timestamp }];
  "auth.refresh": [{ accessToken: string }, { expiresAt: Timestamp }];
  typing: [{ memoryId: Uuid }, null];
  presence: [{}, { devices: { deviceId: Uuid; online: true; thisDevice: boolean }[] }];
  read: [{ memoryId: Uuid; seq: number }, { memoryId: Uuid; seq: number }];
  "memory.list": [
    {
      categoryId?: Uuid;
      page?: number;
      limit?: number;
      search?: string;
      tags?: string[];
      isFavorite?: boolean;
      isArchived?: boolean;
      sortBy?: "created_at" | "updated_at" | "title";
      sortOrder?: "asc" | "desc";
    },
    { memories: Memory[]; pagination: Pagination },
  ];
  "memory.get": [{ memoryId: Uuid }, Memory];
  "memory.create": [MemoryFields, Memory];
  "memory.update": [MemoryFields & { memoryId: Uuid }, Memory];
  "memory.delete": [{ memoryId: Uuid }, { deleted: true }];
  "category.list": [{}, { categories: Category[] }];
  "category.create": [CategoryFields & { name: string }, Category];
  "category.update": [CategoryFields & { categoryId: Uuid }, Category];
  "category.delete": [{ categoryId: Uuid }, { deleted: true }];
  "message.send": [SendFields, Message];
  "message.edit": [{ messageId: Uuid; content?: string; metadata?: Json }, Message];
  "message.delete": [{ messageId: Uuid }, { deleted: true }];
  "message.history": [
    { memoryId: Uuid; before?: number; limit?: number },
    { messages: Message[]; hasMore: boolean },
  ];
  "ai.ask": [
    { memoryId: Uuid; content?: string; clientMsgId?: string },
    { replyTo: Uuid; message: Message | null; started: boolean },
  ];
  "ai.cancel": [{ replyTo?: Uuid; memoryId?: Uuid }, { cancelled: Uuid[] }];
}

export type ConnectionState =
  | "idle"
  | "connecting"
  | "connected"
  | "reconnecting"
  | "offline"
  | "superseded"
  | "signedout"
  | "closed";

export interface Tokens {
  accessToken: string;
  refreshToken?: string | null;
  user?: User;
}

export interface ClientOptions {
  /** The HTTP origin for REST calls (default: location.origin). */
  baseUrl?: string;
  /** The socket URL (default: baseUrl with ws:/wss: and /ws). */
  url?: string;
  accessToken: string;
  /** Used by the default refresh (POST /api/auth/refresh); rotated on every refresh. */
  refreshToken?: string | null;
  /** Your own refresh (e.g. one shared by several tabs); replaces the REST call. */
  refresh?: (current: { accessToken: string | null; refreshToken: string | null }) => Promise<Tokens>;
  /** The stored device id; the welcome's deviceId is kept in `client.deviceId`. */
  deviceId?: Uuid | null;
  /** The newest seq whose effects you hold. Leave it out with no local state: the
   * first welcome then starts at headSeq and "resync" fires. */
  lastSeq?: number | null;
  clientName?: string;
  ackInterval?: number; // ms, default 50
  backoffBase?: number; // ms, default 250
  backoffCap?: number; // ms, default 10000
  requestTimeout?: number; // ms, default 30000
  handshakeTimeout?: number; // ms, default 15000
  idlePing?: number; // ms without a frame before a liveness ping, default 15000
  pingTimeout?: number; // ms, default 8000
  maxRetryAfter?: number; // s of rate_limited worth waiting out, default 30
  refreshMargin?: number; // s before expiry to refresh (at most a quarter of its life), default 60
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

export interface RequestOptions {
  timeout?: number;
  /** Send again after a reconnect if unanswered (default: true for idempotent types). */
  resend?: boolean;
  /** Wait for a connection when there is none (default true); false fails at once. */
  queue?: boolean;
}

export interface ClientListeners {
  event: (event: ServerEvent) => void | Promise<void>;
  signal: (signal: ServerSignal) => void;
  state: (state: ConnectionState) => void;
  welcome: (welcome: Welcome) => void;
  resync: (welcome: Welcome) => void | Promise<void>;
  tokens: (tokens: Tokens) => void;
  error: (error: Error) => void;
  signedout: (error: AuthError) => void;
}

export declare class MemorydError extends Error {
  code: string;
  retryAfter: number | null;
  details: unknown;
  status: number | null;
  id: string | number | null;
}

export declare class DisconnectedError extends Error {
  code: "disconnected";
}

export declare class AuthError extends MemorydError {}

export declare function tokenClaims(token: string): Record<string, unknown> | null;

export declare class MemorydClient {
  constructor(options: ClientOptions);
  readonly state: ConnectionState;
  readonly userId: Uuid | null;
  baseUrl: string;
  url: string;
  accessToken: string | null;
  refreshToken: string | null;
  deviceId: Uuid | null;
  lastSeq: number | null;
  welcome: Welcome | null;
  closeCode: number | null;
  connections: number;
  on<K extends keyof ClientListeners>(name: K, listener: ClientListeners[K]): () => void;
  connect(): Promise<Welcome>;
  close(): void;
  drop(): void;
  request<K extends keyof Requests>(
    type: K,
    params?: Requests[K][0],
    options?: RequestOptions,
  ): Promise<Requests[K][1]>;
  sendMessage(
    memoryId: Uuid,
    content: string,
    extra?: Partial<Omit<SendFields, "memoryId" | "content">>,
  ): Promise<Message>;
  newClientMsgId(): string;
  typing(memoryId: Uuid): void;
  refreshNow(): Promise<void>;
  api<T = unknown>(
    path: string,
    options?: {
      method?: string;
      query?: Record<string, string | number | boolean | (string | number)[] | null | undefined>;
      body?: unknown;
      headers?: Record<string, string>;
      signal?: AbortSignal;
    },
  ): Promise<T>;
}

export declare function login(
  email: string,
  password: string,
  options?: { baseUrl?: string; rememberMe?: boolean },
): Promise<Tokens & { user: User; refreshToken: string }>;

export declare function register(
  fields: { email: string; password: string; firstName: string; lastName: string; username?: string },
  options?: { baseUrl?: string },
): Promise<Tokens & { user: User; refreshToken: string }>;
