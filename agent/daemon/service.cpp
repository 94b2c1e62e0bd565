#include "daemon/service.h"

namespace spark::daemon {

std::vector<ServiceEntry>& service_registry() {
  static std::vector<ServiceEntry> list;
  return list;
}

ServiceRegistration::ServiceRegistration(std::string name, int order, ServiceFactory factory) {
  service_registry().push_back({std::move(name), order, std::move(factory)});
}

}  // namespace spark::daemon
