-- wrk script of benchmarks/leads_ingest.py: POST /v1/leads with a realistic Spanish lead.
--
-- Every request carries a new person (unique email local part and +34 mobile number), so
-- each one creates a lead. With a duplicate share d > 0, about d of the requests resend
-- an earlier lead of the same thread (same email, phone and name): an exact duplicate.
--
--   wrk -t2 -c32 -d8s -s benchmarks/leads_ingest.lua -H "Authorization: Bearer KEY" \
--       http://127.0.0.1:8000/v1/leads -- <run id 0-19> <duplicate share 0..1>
--
-- Numbers are unique across threads and runs while run id < 20, threads <= 4 and a
-- thread sends < 1,000,000 requests per run (mobile numbers 6xx xxx xxx, all valid).
-- The pools below are also read by leads_ingest.py (one `local NAME = {...}` per line).

local FIRST_NAMES = {"José", "María", "Antonio", "Carmen", "Manuel", "Ana", "Francisco", "Laura", "David", "Isabel", "Javier", "Lucía", "Jesús", "Cristina", "Alejandro", "Marta", "Miguel Ángel", "María José", "Pablo", "Elena", "Sergio", "Raquel", "Álvaro", "Nuria", "Íñigo", "Begoña", "Jordi", "Montserrat", "Rubén", "Inmaculada", "Adrián", "Pilar"}
local SURNAMES = {"García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Martín", "Jiménez", "Ruiz", "Hernández", "Díaz", "Moreno", "Muñoz", "Álvarez", "Romero", "Alonso", "Gutiérrez", "Navarro", "Torres", "Domínguez", "Vázquez", "Ramos", "Gil", "Ramírez", "Serrano", "Blanco", "Molina", "Morales", "Suárez", "Ortega", "Delgado", "Castro", "Ortiz", "Rubio", "Marín", "Sanz", "Núñez", "Iglesias", "Medina", "Garrido", "Cortés", "Castillo", "Santos", "Lozano", "Guerrero", "Cano", "Prieto", "Méndez", "Cruz", "Calvo", "Gallego", "Vidal", "León", "Márquez", "Herrera", "Peña", "Flores"}
local COMPANY_KINDS = {"Construcciones", "Talleres Mecánicos", "Distribuciones", "Clínica Dental", "Bodegas", "Asesoría Fiscal", "Transportes", "Inmobiliaria", "Hostelería", "Grupo Logístico", "Farmacia", "Ingeniería Solar", "Academia de Idiomas", "Carpintería Metálica", "Consultoría Tecnológica", "Agencia de Viajes", "Panadería Artesana", "Seguros", "Estudio de Arquitectura", "Laboratorios"}
local COMPANY_NAMES = {"del Ebro", "Peñalara", "Sonrisas", "Viña Almudena", "Levante Exprés", "Costa Brava", "La Bahía", "Ibérica", "Castellana", "Andaluza", "Cervantes", "Galicia", "Ñandú", "Mediterránea", "El Horno", "Valle del Jerte", "Atlántico Norte", "Gaudí", "Hermanos Núñez", "Sierra Nevada", "Montes de Toledo", "Rías Baixas", "Guadalquivir", "Picos de Europa"}
local LEGAL_FORMS = {"S.L.", "S.L.", "S.A.", "S.L.U.", "S.L.P.", "C.B.", "S.Coop."}
local JOB_TITLES = {"Director General", "Directora de Compras", "Responsable de Marketing", "Jefe de Administración", "Gerente", "Directora Financiera", "Responsable de Sistemas", "Técnico de Mantenimiento", "Jefa de Recursos Humanos", "Director Comercial", "Coordinadora de Operaciones", "Socio fundador"}
local PLACES = {"Madrid|Comunidad de Madrid", "Barcelona|Cataluña", "Valencia|Comunidad Valenciana", "Sevilla|Andalucía", "Zaragoza|Aragón", "Málaga|Andalucía", "Murcia|Región de Murcia", "Palma|Islas Baleares", "Las Palmas de Gran Canaria|Canarias", "Bilbao|País Vasco", "Alicante|Comunidad Valenciana", "Córdoba|Andalucía", "Valladolid|Castilla y León", "Vigo|Galicia", "Gijón|Asturias", "A Coruña|Galicia", "Vitoria-Gasteiz|País Vasco", "Granada|Andalucía", "Elche|Comunidad Valenciana", "Oviedo|Asturias", "Cáceres|Extremadura", "Logroño|La Rioja", "Pamplona|Navarra", "Santander|Cantabria"}
local DOMAINS = {"gmail.com", "hotmail.es", "yahoo.es", "outlook.es", "telefonica.net", "nunezconstrucciones.es", "talleresebro.com", "penalara-distribuciones.es", "bodegasalmudena.es", "levanteexpres.com", "solarandaluza.es", "grupologisticoiberico.com"}
local SOURCES = {"web_form", "web_form", "web_form", "api", "event", "referral", "chat"}
local CAMPAIGNS = {"primavera-2026", "feria-construccion", "webinar-erp", "black-friday", "newsletter-octubre"}
local PRODUCTS = {"ERP", "CRM", "TPV", "Nóminas", "Facturación electrónica"}
local EMPLOYEES = {"1-9", "10-49", "50-249", "250+"}

local threads_seen = 0
local MAX_THREADS = 4

function setup(thread)
  thread:set("tid", threads_seen)
  threads_seen = threads_seen + 1
end

local run, dup, n, seq_base

function init(args)
  run = tonumber(args[1] or "0")
  dup = tonumber(args[2] or "0")
  n = 0
  seq_base = (run * MAX_THREADS + tid) * 1000000
  math.randomseed(run * 7919 + tid + 1)
  wrk.headers["Content-Type"] = "application/json"
end

-- A Park-Miller step: exact in LuaJIT's doubles, so each pool gets an independent-looking
-- index (a plain `seq % #pool` would repeat the same person every lcm(pool sizes) leads).
local M = 2147483647
local function mix(x)
  return (x * 48271) % M
end

local function pick(pool, h)
  return pool[(h % #pool) + 1]
end

local function ascii(text)
  -- The email's local part: lower-case, accents dropped, spaces as dots.
  local map = {["á"] = "a", ["é"] = "e", ["í"] = "i", ["ó"] = "o", ["ú"] = "u", ["ñ"] = "n",
               ["Á"] = "a", ["É"] = "e", ["Í"] = "i", ["Ó"] = "o", ["Ú"] = "u", ["Ñ"] = "n"}
  for accented, plain in pairs(map) do text = text:gsub(accented, plain) end
  return (text:lower():gsub(" ", "."))
end

-- The lead number `seq` always gives the same person: a resent number is a duplicate.
local function lead_body(seq)
  local h = {}
  h[1] = mix(seq + 1)
  for i = 2, 14 do h[i] = mix(h[i - 1]) end
  local first = pick(FIRST_NAMES, h[1])
  local s1 = pick(SURNAMES, h[2])
  local s2 = pick(SURNAMES, h[3])
  local city, region = pick(PLACES, h[4]):match("([^|]+)|(.+)")
  local digits = string.format("%09d", 600000000 + seq)
  local phone
  if seq % 2 == 0 then
    phone = "+34 " .. digits:sub(1, 3) .. " " .. digits:sub(4, 5) .. " " .. digits:sub(6, 7)
      .. " " .. digits:sub(8, 9)
  else
    phone = digits:sub(1, 3) .. " " .. digits:sub(4, 6) .. " " .. digits:sub(7, 9)
  end
  -- A business named after a place or a family (a surname): ~3,000 distinct companies.
  local owner_name = h[12] % 2 == 0 and pick(COMPANY_NAMES, h[13]) or pick(SURNAMES, h[13])
  local company = pick(COMPANY_KINDS, h[6]) .. " " .. owner_name .. " " .. pick(LEGAL_FORMS, h[14])
  local email = ascii(first) .. "." .. ascii(s1) .. "." .. seq .. "@" .. pick(DOMAINS, h[5])
  return string.format(
    '{"email":"%s","phone":"%s","first_name":"%s","last_name":"%s %s","company":"%s",'
      .. '"job_title":"%s","country":"ES","region":"%s","city":"%s","language":"es",'
      .. '"source":"%s","utm":{"source":"google","medium":"cpc","campaign":"%s"},'
      .. '"consent":{"marketing":true,"given_at":"2025-10-14T09:30:00+02:00",'
      .. '"wording_version":"rgpd-2025-03","source":"https://www.ejemplo.es/contacto"},'
      .. '"custom_fields":{"producto":"%s","empleados":"%s"}}',
    email, phone, first, s1, s2, company, pick(JOB_TITLES, h[7]), region, city,
    pick(SOURCES, h[8]), pick(CAMPAIGNS, h[9]), pick(PRODUCTS, h[10]), pick(EMPLOYEES, h[11])
  )
end

function request()
  n = n + 1
  local k = n
  if dup > 0 and n > 20 and math.random() < dup then
    k = n - math.random(1, 20)
  end
  return wrk.format("POST", nil, nil, lead_body(seq_base + k))
end
