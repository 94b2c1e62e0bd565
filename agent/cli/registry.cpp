#include "cli/registry.h"

#include <algorithm>
#include <cstdio>
#include <iostream>

namespace spark::cli {

std::vector<VerbEntry>& verbs() {
  static std::vector<VerbEntry> list;
  return list;
}

Verb::Verb(std::string name, int order, VerbSetup setup) {
  verbs().push_back({std::move(name), order, std::move(setup)});
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size() && i < width.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    std::cout << out << '\n';
  };
  line(header);
  for (const auto& r : rows) line(r);
}

void print_json(const nlohmann::json& j) { std::cout << j.dump() << std::endl; }

int report_error(const Context& ctx, const std::string& message) {
  if (ctx.json) print_json({{"error", message}});
  std::cerr << "spark-tune: " << message << std::endl;
  return k_exit_error;
}

}  // namespace spark::cli
