/* A fake libnvidia-ml.so.1 for test.sh, on machines without a GPU: NVML's
 * init answers "driver not loaded", so a test can show that the agent's
 * go-nvml found and dlopened the library where the README's bind mount puts
 * it. It knows nothing else of NVML; never install it on a node. */
typedef int nvmlReturn_t;
enum { NVML_ERROR_DRIVER_NOT_LOADED = 9 };

nvmlReturn_t nvmlInit(void) { return NVML_ERROR_DRIVER_NOT_LOADED; }
nvmlReturn_t nvmlInit_v2(void) { return NVML_ERROR_DRIVER_NOT_LOADED; }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return NVML_ERROR_DRIVER_NOT_LOADED; }
nvmlReturn_t nvmlShutdown(void) { return 0; }
const char *nvmlErrorString(nvmlReturn_t r) {
  return r == NVML_ERROR_DRIVER_NOT_LOADED ? "Driver Not Loaded (fake libnvidia-ml of test.sh)" : "Unknown Error";
}
