// relay-client: a JavaScript client of the Relay server.
//   High level: RelayClient (client.mjs) with a store (MemoryStore, FileStore) and typed errors.
//   Low level: HTTP (request, call), RelaySocket / ProvisioningSocket, SignalParty and its stores,
//   RelayUser / RelayDevice, provisioning seal/open, attachments, sender keys and the sealed
//   group meta.
export { RelayClient, parseLinkString, DEFAULT_REFILL, DEFAULT_ROTATE, DEFAULT_RECEIPTS } from './client.mjs';
export { MemoryStore, FileStore } from './store.mjs';
export * from './errors.mjs';
export * from './http.mjs';
export * from './socket.mjs';
export * from './signal.mjs';
export * from './provisioning.mjs';
export { RelayUser, uniqueUsername, randomPassword } from './user.mjs';
export { RelayDevice, deliveries } from './devices.mjs';
export * from './attachments.mjs';
export * from './senderkeys.mjs';
export { newMetaKey, sealMeta, openMeta } from './groupmeta.mjs';
