// ES module entry: the same two functions as index.cjs (one implementation, so the platform
// package is resolved the same way from import and require).
import litestream from "./index.cjs";

export const { getLoadablePath, load } = litestream;
export default litestream;
