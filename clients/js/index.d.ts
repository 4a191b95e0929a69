// Types of relay-client (the high-level API, the stores, the errors; the low-level modules are
// plain JavaScript under src/ and are typed loosely here).
import { EventEmitter } from 'node:events';

export interface Store {
  load(): Promise<object | null>;
  save(doc: object): Promise<void>;
  clear(): Promise<void>;
  /** Optional: exclusive use while a client has the store open. */
  acquire?(): Promise<void>;
  release?(): Promise<void>;
}
export class MemoryStore implements Store {
  constructor(initial?: object | null);
  load(): Promise<object | null>;
  save(doc: object): Promise<void>;
  clear(): Promise<void>;
}
/**
 * One JSON file, <dir>/account.json: atomic writes (tmp + fsync + rename), mode 0600, directory
 * 0700; <dir>/lock held while a client has it open (RelayError 'store_in_use' for another process).
 */
export class FileStore implements Store {
  constructor(dir: string, opts?: { file?: string });
  readonly dir: string;
  readonly path: string;
  load(): Promise<object | null>;
  save(doc: object): Promise<void>;
  clear(): Promise<void>;
  acquire(): Promise<void>;
  release(): Promise<void>;
}

export interface RefillOptions {
  /** Upload `oneTime` EC one-time prekeys when fewer than this are left (default 20). */
  below?: number;
  oneTime?: number; // default 100
  /** Upload `kyber` Kyber one-time prekeys when fewer than this are left (default 5). */
  kyberBelow?: number;
  kyber?: number; // default 20
}

export interface RotateOptions {
  /** Make a new signed prekey and Kyber last-resort prekey when the current one is this old (default 2 days). */
  everyMs?: number;
  /** Delete retired ones this old, except the newest retired one (default 30 days). */
  keepMs?: number;
}

export interface OpenOptions {
  /** Base URL of the relay; default process.env.RELAY_URL || 'http://127.0.0.1:8080'. */
  url?: string;
  store: Store;
  username?: string;
  /** Required to register; used to log in when the stored refresh token no longer works. */
  password?: string;
  /** Register `username` when the store is empty (default true). */
  register?: boolean;
  /** Ack mode (`&ack=1`, docs/api.md §6.9), default true. */
  ack?: boolean;
  refill?: RefillOptions;
  rotate?: RotateOptions;
  /** Keep the password in the store (default false). */
  savePassword?: boolean;
  /** How long send() waits for the connection to come back (default 30000 ms). */
  sendTimeoutMs?: number;
  /** End-to-end receipts sent (default DEFAULT_RECEIPTS); false sends none. */
  receipts?: ReceiptOptions | false;
  /**
   * The history on the device. A FileStore keeps it in <dir>/history.enc, AES-256-GCM with a key
   * from scrypt(password) (the `password` given to open, or `history.password`) or from a key file
   * (`history.keyFile`, made when missing); without either, and for a MemoryStore or `false`, it
   * is kept in memory only.
   */
  history?: HistoryOptions | false;
}

export interface ReceiptOptions {
  /** Send `delivered` for every ordinary message received (default true). */
  delivered?: boolean;
  /** Send `read` for what markRead() marks (default true). */
  read?: boolean;
  /** Receipts to one account wait this long to be sent together (default 250 ms)… */
  delayMs?: number;
  /** …or until this many ids wait (default 100; also the most ids of one receipt message). */
  maxIds?: number;
}
export const DEFAULT_RECEIPTS: Readonly<Required<ReceiptOptions>>;

export interface HistoryOptions {
  password?: string;
  /** 64 hex digits (32 bytes), made with mode 0600 when missing. */
  keyFile?: string;
  /** Default <store dir>/history.enc. */
  file?: string;
}

/** A conversation: a username or user id (one-to-one), { groupId }, or 'group:ID'. */
export type Conversation = string | { groupId: string };

export type MessageStatus = 'sent' | 'delivered' | 'read' | 'received';

/** A message kept in the history. */
export interface HistoryEntry {
  /** The message id (the sender's: SendResult.id, Message.messageId). */
  id: string;
  /** The other account's user id, or 'group:ID'. */
  conversation: string;
  groupId?: string;
  /** One-to-one: the other account's username, when known. */
  with?: string;
  from: { userId: string; deviceId?: number; username?: string };
  /** Sent by this account (from this device or another of its devices). */
  outgoing: boolean;
  text: string | null;
  /** A message of bytes: its content, base64. */
  b64?: string;
  sentAt: Date;
  /** Outgoing: 'sent' | 'delivered' | 'read'; incoming: 'received' | 'read' (markRead). */
  status: MessageStatus;
  /** Outgoing: the user ids whose receipts said delivered / read (several in a group). */
  deliveredTo?: string[];
  readBy?: string[];
  /** A disappearing message: dropped from the history then (an 'expired' event). */
  expiresAt?: Date;
}

/** A user who shares presence both ways with this account. */
export interface PresenceEntry {
  userId: string;
  /** When this client knows the name (looked up, or a checked claim). */
  username?: string;
  online: boolean;
  /** Offline, when that user shows it: when their last connection ended, to the minute. */
  lastSeen?: Date;
}

export interface PresenceShares {
  /** Sorted user ids. */
  userIds: string[];
  lastSeen: boolean;
}

export interface ExpiredEntry {
  id: string;
  conversation: string;
}

export interface ReceiptEvent {
  from: Peer;
  type: 'delivered' | 'read';
  /** Message ids (the sender's). */
  ids: string[];
  sentAt: Date;
}

export interface StatusEvent {
  id: string;
  conversation: string;
  /** The new status of a message this account sent. */
  status: 'delivered' | 'read';
  by: Peer;
  message: HistoryEntry;
}

export interface Peer {
  userId: string;
  deviceId: number;
  /** Only when the claimed name was checked to map to userId (or it is this account). */
  username?: string;
}

export interface Message {
  /** The envelope id (the relay's; the same on a redelivery). */
  id: string;
  /** The sender's id of the message, from inside the ciphertext (what receipts and the history use; the envelope id when the sender put none). */
  messageId: string;
  /** The other account's user id (the recipient's for a sync copy), or 'group:ID'. */
  conversation: string;
  from: Peer;
  /** The text; null for a message of bytes. */
  text: string | null;
  /** The content's bytes (the UTF-8 of the text for a text message). */
  bytes: Uint8Array;
  sentAt: Date;
  /** A copy of what this account sent from another of its devices. */
  sync: boolean;
  /** Sync copies: the person it was sent to. */
  to?: { userId: string; username?: string };
  /** A group message: the group's id. */
  groupId?: string;
  /** A disappearing message: the relay's expiry (the envelope's `expires_at`). */
  expiresAt?: Date;
}

export type State = 'connecting' | 'online' | 'offline';

export interface Delivery {
  deviceId: number;
  delivery: 'delivered' | 'queued' | 'dropped';
}

export interface SendResult {
  /** The send's id (kept across retries: the relay stores it once). */
  id: string;
  /** Overall: 'dropped' if any device's is, else 'queued' if any is, else 'delivered'. */
  delivery: 'delivered' | 'queued' | 'dropped';
  deliveries: Delivery[];
  /** With `expiresIn`: when the message disappears (counted from before the frame left). */
  expiresAt?: Date;
}

export interface SendOptions {
  timeoutMs?: number;
  /** A disappearing message: whole seconds, 5 to the relay's INBOX_TTL_SECS (sent as `expires_in`). */
  expiresIn?: number;
}

export interface GroupSendResult {
  id: string;
  groupId: string;
  delivery: 'delivered' | 'queued' | 'dropped';
  /** Member devices reached at once, queued, dropped (all 0: no other member device). */
  delivered: number;
  queued: number;
  dropped: number;
  /** With `expiresIn`: when the message disappears. */
  expiresAt?: Date;
}

export type GroupRole = 'admin' | 'member';
export type GroupState = 'invited' | 'member';

export interface GroupMember {
  userId: string;
  /** When this client knows it (looked up, or a checked claim). */
  username?: string;
  role: GroupRole;
  state: GroupState;
  since: Date;
}

export interface Group {
  groupId: string;
  version: number;
  /** The meta opened; null when the group has none; undefined while no key this device holds opens it. */
  meta: unknown;
  createdAt: Date;
  /** In the order users entered. */
  members: GroupMember[];
  /** This account's role and state (null once it is no longer in the roster). */
  role: GroupRole | null;
  state: GroupState | null;
}

export interface GroupListEntry {
  groupId: string;
  role: GroupRole;
  state: GroupState;
}

export interface Invite {
  groupId: string;
  from: Peer;
}

export interface GroupKeyEvent {
  groupId: string;
  from: Peer;
  /** Sent by createGroup/invite: an invitation. */
  invite: boolean;
  /** The sender key's distribution id, when the message carried one. */
  distributionId: string | null;
}

export interface DeviceInfo {
  id: number;
  registrationId: number;
  createdAt: Date;
  /** This client's device. */
  current: boolean;
}

export interface Linking {
  /** ADDRESS.KEY: the provisioning address and the new device's ephemeral public key (base64url). */
  linkString: string;
  address: string;
  /** The new device's client (not connected yet), once the primary has linked it. */
  done: Promise<RelayClient>;
  cancel(): Promise<void>;
}

export class RelayClient extends EventEmitter {
  static open(opts: OpenOptions): Promise<RelayClient>;
  static startLinking(opts: { url?: string; store: Store; ack?: boolean; refill?: RefillOptions; rotate?: RotateOptions; sendTimeoutMs?: number; receipts?: ReceiptOptions | false; history?: HistoryOptions | false }): Promise<Linking>;
  /** Use RelayClient.open() or RelayClient.startLinking(). */
  private constructor();
  readonly url: string;
  readonly userId: string;
  readonly deviceId: number;
  readonly username: string;
  readonly state: State;
  on(event: 'message', listener: (m: Message) => void): this;
  on(event: 'state', listener: (s: State) => void): this;
  on(event: 'error', listener: (e: RelayError) => void): this;
  /** Another account invited this one to a group (the per-group key arrived with it). */
  on(event: 'invite', listener: (i: Invite) => void): this;
  /** A group key message arrived (a per-group key, a sender key, or both). */
  on(event: 'groupKey', listener: (k: GroupKeyEvent) => void): this;
  /** A receipt arrived (end-to-end encrypted like a message; never reported as a message). */
  on(event: 'receipt', listener: (r: ReceiptEvent) => void): this;
  /** A message this account sent got a higher status (✓✓ delivered, read) from a receipt. */
  on(event: 'status', listener: (s: StatusEvent) => void): this;
  /** A user who shares presence both ways came online (first connection) or went offline (last one ended). */
  on(event: 'presence', listener: (p: PresenceEntry) => void): this;
  /** Disappearing messages dropped from the history as they expired. */
  on(event: 'expired', listener: (messages: ExpiredEntry[]) => void): this;
  /** Another device of this account renamed it: this client uses the new name from now on. */
  on(event: 'renamed', listener: (r: { username: string }) => void): this;
  /**
   * Connects and fetches what waits; keeps the connection afterwards. Rejects when the first
   * attempt fails; the client keeps retrying in the background unless it is an AuthError.
   */
  connect(): Promise<void>;
  send(to: string, content: string | Uint8Array, opts?: SendOptions): Promise<SendResult>;
  lookup(username: string): Promise<string>;
  devices(): Promise<DeviceInfo[]>;
  /**
   * A group: this account its admin, `users` (usernames or user ids) invited. `meta` (anything
   * JSON holds) is sealed with a per-group key only members get.
   */
  createGroup(users?: string[], meta?: unknown): Promise<Group>;
  /** Admins only. */
  invite(groupId: string, users: string | string[]): Promise<Group>;
  join(groupId: string): Promise<Group>;
  /** Leaves (or declines). */
  leave(groupId: string): Promise<Group>;
  /** Admins remove anyone; anyone removes themselves. The next send uses a new sender key. */
  remove(groupId: string, user: string): Promise<Group>;
  /** Admins only; the group keeps at least one joined admin. */
  setRole(groupId: string, user: string, role: GroupRole): Promise<Group>;
  /** Admins only; sealed with the per-group key (RelayError 'no_group_key' without one); null clears it. */
  setMeta(groupId: string, meta: unknown): Promise<Group>;
  groups(): Promise<GroupListEntry[]>;
  group(groupId: string): Promise<Group>;
  /** One ciphertext under this device's sender key to every member device (own others included). */
  sendGroup(groupId: string, content: string | Uint8Array, opts?: SendOptions & { onlineOnly?: boolean }): Promise<GroupSendResult>;
  /**
   * Replaces the presence share list (usernames or user ids, at most 1,000; [] clears it): who may
   * see when this account is online, if they share theirs with it too. Resolves it as stored.
   */
  setPresenceShares(users: string[], opts?: { lastSeen?: boolean }): Promise<PresenceShares>;
  presenceShares(): Promise<PresenceShares>;
  /** The presence of those of `users` who share both ways with this account (the others left out). */
  presence(users: string[]): Promise<PresenceEntry[]>;
  /** Everything the relay stores about this account: GET /v1/account/export's JSON as it comes (docs/api.md §5.35). */
  exportAccount(): Promise<any>;
  /** Renames the account (primary device only); the account's other devices are told. UsernameTakenError when taken. */
  changeUsername(username: string): Promise<{ userId: string; username: string }>;
  /**
   * On the primary: links the device that printed `linkString`. Resolves to the id the relay gave
   * the new device (seen in GET /v1/devices once it has linked itself), or null when it did not
   * show up within `timeoutMs` (default 60000).
   */
  linkDevice(linkString: string, opts?: { timeoutMs?: number }): Promise<{ deviceId: number | null }>;
  /**
   * Rotates the signed and Kyber last-resort prekeys when due (the client also checks at connect,
   * after a PreKey message and at every ping). Null when not due.
   */
  rotateIfDue(): Promise<{ signedPreKeyId: number; kyberLastResortId: number } | null>;
  /**
   * Marks received messages of a conversation read (all when `ids` is not given) and sends `read`
   * receipts to their senders (gathered). Resolves the ids newly marked.
   */
  markRead(conversation: Conversation, ids?: string | string[]): Promise<string[]>;
  /** Sends the receipts gathered so far now. */
  flushReceipts(): Promise<void>;
  /** A page of a conversation, oldest first: the `limit` (50) newest before `before` (a Date, ms or a message id). */
  history(conversation: Conversation, opts?: { before?: Date | number | string; limit?: number }): Promise<HistoryEntry[]>;
  /** Messages whose text holds every word of `query` (case-insensitive), oldest first; searched on the device. */
  search(query: string, opts?: { conversation?: Conversation; limit?: number }): Promise<HistoryEntry[]>;
  conversations(): { conversation: string; count: number; last: HistoryEntry }[];
  message(id: string): HistoryEntry | undefined;
  /** True when the history is kept on disk (encrypted), false when in memory only. */
  readonly historyPersistent: boolean;
  /** Opens the encrypted history after an open without its key; adds what was kept in memory since. */
  openHistory(opts: HistoryOptions): Promise<void>;
  /** Deletes the history file and what is in memory. */
  deleteHistory(): Promise<void>;
  close(): Promise<void>;
  logout(): Promise<void>;
}

export function parseLinkString(linkString: string): { address: string; publicKey: unknown };

export class RelayError extends Error {
  /** E.g. 'store_in_use' (FileStore locked by another process: `lock`, `pid` set). */
  code: string;
  /** HTTP status (or the error frame's), 0 when the relay could not be reached. */
  status: number;
  /** store_in_use: the lock file and the pid holding it. */
  lock?: string;
  pid?: number;
}
export class RateLimitedError extends RelayError {
  /** Seconds to wait. */
  retryAfter: number;
}
export class PreKeysExhaustedError extends RelayError {
  devices?: number[];
}
export class UnknownUserError extends RelayError {}
/** 401. code 'account_unknown': the stored account (or device) is no longer known to the relay. */
export class AuthError extends RelayError {}
export class UsernameTakenError extends RelayError {}
export class ServerUnavailableError extends RelayError {}
export class MismatchedDevicesError extends RelayError {}
export class ApiError extends RelayError {}

// Low level (see src/*.mjs).
export const RELAY_URL: string;
export function relayUrls(url?: string): { url: string; wsUrl: string; provisioningUrl: string };
export function request(method: string, path: string, opts?: { body?: unknown; token?: string; rawBody?: string; retries429?: number; url?: string; timeoutMs?: number }): Promise<{ status: number; headers: Headers; json: any; text: string }>;
export function call(method: string, path: string, opts?: { body?: unknown; token?: string; rawBody?: string; retries429?: number; url?: string; timeoutMs?: number }): Promise<any>;
export function waitForRelay(timeoutMs?: number, opts?: { url?: string }): Promise<void>;
export const RelaySocket: any;
export const ProvisioningSocket: any;
export const SignalParty: any;
export const RelayUser: any;
export const RelayDevice: any;
export class MemSenderKeyStore {}
export const MSG_SENDER_KEY: number;
export function distributionMessage(party: unknown, distributionId: string): Promise<Uint8Array>;
export function processDistribution(party: unknown, userId: string, deviceId: number, bytes: Uint8Array | string): Promise<string>;
export function groupEncrypt(party: unknown, distributionId: string, plaintext: string | Uint8Array): Promise<string>;
export function groupDecrypt(party: unknown, userId: string, deviceId: number, body: string | Uint8Array): Promise<Uint8Array>;
export function distributionIdOf(body: string | Uint8Array): string;
export function newMetaKey(): string;
export function sealMeta(key: string, value: unknown): string;
export function openMeta(key: string, meta: string): unknown;
export function sealProvisioningMessage(recipientPub: unknown, payload: object, opts: { address: string }): Buffer;
export function openProvisioningMessage(privateKey: unknown, bytes: Uint8Array, opts: { address: string }): any;
