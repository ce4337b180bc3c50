// Progressive enhancement only: the page works without this file.
(function () {
  // Click beacons: record the click without waiting for the redirect round trip.
  document.querySelectorAll("a.result-link").forEach(function (a) {
    a.addEventListener("click", function () {
      if (!navigator.sendBeacon) return;
      var data = new FormData();
      data.append("request_id", a.dataset.request);
      data.append("doc_id", a.dataset.doc);
      if (navigator.sendBeacon("/click", data)) {
        var next = new URL(a.href, location.href).searchParams.get("next");
        if (next) { a.href = next; }
      }
    });
  });
  // Drag and drop onto the upload zone.
  var drop = document.getElementById("drop"), input = document.getElementById("image"), form = document.getElementById("upload-form");
  if (drop && input && form) {
    ["dragenter", "dragover"].forEach(function (t) { drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add("over"); }); });
    ["dragleave", "drop"].forEach(function (t) { drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.remove("over"); }); });
    drop.addEventListener("drop", function (e) {
      if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; form.submit(); }
    });
    input.addEventListener("change", function () { if (input.files.length) form.submit(); });
  }
})();
