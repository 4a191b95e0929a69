// Encrypted attachments, the client's side, live in the client library (clients/js/src/attachments.mjs).
export * from '../../../clients/js/src/attachments.mjs';
