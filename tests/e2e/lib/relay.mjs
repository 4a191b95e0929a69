// The relay half of the client (HTTP and WebSocket) lives in the client library
// (clients/js/src/http.mjs, socket.mjs, errors.mjs).
export * from '../../../clients/js/src/http.mjs';
export * from '../../../clients/js/src/socket.mjs';
export { ApiError } from '../../../clients/js/src/errors.mjs';
